"""The GraphQL schema: queries over the chain, mutations, the new-block subscription.

Theory of operation
-------------------
* Who may call what is decided once per request, before execution, from the root fields
  (:data:`PERMISSIONS`; see :func:`gateway.app`): chain queries need ``chain:read``,
  submitting ``chain:write``, user administration and governance ``admin``; ``login`` and
  ``bootstrapAdmin`` (which needs the one-time setup credential) are public and ``me`` needs
  any valid token. Mutation resolvers check again (defense in depth).
* Governance mutations (``proposeMember``, ``proposeRemoval``, ``castVote``) are signed with
  the institution's governance key by :class:`gateway.governance.Governance`, which the app
  passes as the root value of mutations (None: the gateway has no keystore).
* Every mutation returns a payload with either its result or a typed ``error``
  (``code`` + ``message``); nothing is raised to the client from a mutation.
* The subscription field ``newBlock`` is executed by :mod:`gateway.live` once per new final
  block, with that block as the root value.
"""

# mypy: disallow-subclassing-any=False
from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable
from typing import Any

import graphene
import psycopg

from gateway.auth.tokens import Claims
from gateway.authn import require
from gateway.context import RequestContext, decode_cursor, hex_bytes
from gateway.envelopes import KEY_SET_OPERATIONS
from gateway.errors import GatewayError, Unavailable
from gateway.governance import Governance, GovernanceKeyMissing, Outcome
from gateway.iam.errors import IamError
from gateway.types import (
    Anchor,
    Asset,
    Block,
    BlockConnection,
    ChainSummary,
    Identity,
    Info,
    Institution,
    L2Batch,
    Me,
    Proposal,
    Transaction,
    TransactionConnection,
    connection,
    ctx,
    encode_cursor,
    listed,
    sender_page,
    tx_cursor,
)
from ledger.tx import TxRejected, parse_tx
from projections import read
from projections.read import queries
from readers.proofs import record_proof_json

log = logging.getLogger("pantheon.gateway")

READ, WRITE, ADMIN, ANY_TOKEN = "chain:read", "chain:write", "admin", ""
#: Root field -> permission (``""``: any valid token; ``None``: public).
PERMISSIONS: dict[str, dict[str, str | None]] = {
    "query": {"me": ANY_TOKEN},  # every other query field: chain:read
    "mutation": {
        "login": None,
        "submitTransaction": WRITE,
        "createUser": ADMIN,
        "disableUser": ADMIN,
        "forgetUser": ADMIN,
        "createGroup": ADMIN,
        "addGroupMember": ADMIN,
        "grantPermission": ADMIN,
        "revokePermission": ADMIN,
        "revokeAllTokens": ADMIN,
        "bootstrapAdmin": None,
        "proposeMember": ADMIN,
        "proposeRemoval": ADMIN,
        "castVote": ADMIN,
    },
    "subscription": {},
}


def required_permission(operation: str, field: str) -> str | None:
    """The permission a root field needs (None: public, "": any valid token)."""
    if field.startswith("__"):
        return None  # introspection describes the schema, not the chain
    table = PERMISSIONS.get(operation, {})
    return table.get(field, READ)


class Query(graphene.ObjectType):
    summary = graphene.Field(ChainSummary, description="height, counts and recent throughput")
    blocks = graphene.Field(
        BlockConnection,
        required=True,
        first=graphene.Int(default_value=20),
        after=graphene.String(),
        description="final blocks, newest first",
    )
    block = graphene.Field(Block, height=graphene.Int(), hash=graphene.String())
    transactions = graphene.Field(
        TransactionConnection,
        required=True,
        first=graphene.Int(default_value=20),
        after=graphene.String(),
        sender=graphene.String(),
        description="newest first; of one sender if given",
    )
    transaction = graphene.Field(Transaction, id=graphene.String(required=True))
    key_set_transactions = graphene.List(
        graphene.NonNull(Transaction),
        required=True,
        after_height=graphene.Int(default_value=0),
        first=graphene.Int(default_value=100),
        description="accepted entries that can change the validator set or its keys "
        "(governance, operators, key rotations) above a height, oldest first; the explorer "
        "replays them from the genesis (D49)",
    )
    institutions = graphene.List(graphene.NonNull(Institution), required=True)
    proposals = graphene.List(
        graphene.NonNull(Proposal), required=True, first=graphene.Int(default_value=20)
    )
    identity = graphene.Field(Identity, key_id=graphene.String(required=True))
    identities = graphene.List(
        graphene.NonNull(Identity),
        required=True,
        institution=graphene.String(required=True),
        role=graphene.String(),
        first=graphene.Int(default_value=50),
    )
    devices = graphene.List(
        graphene.NonNull(Identity),
        required=True,
        institution=graphene.String(required=True),
        first=graphene.Int(default_value=50),
    )
    anchor = graphene.Field(Anchor, data_id=graphene.String(required=True))
    anchors = graphene.List(
        graphene.NonNull(Anchor),
        required=True,
        institution=graphene.String(required=True),
        first=graphene.Int(default_value=20),
    )
    asset = graphene.Field(Asset, asset_id=graphene.String(required=True))
    record_proof = graphene.Field(
        graphene.JSONString,
        device_key_id=graphene.String(required=True),
        sequence=graphene.Int(required=True),
        description="a device record with its proof to a final block (check offline with "
        "`pantheon verify`); null until its batch is final and projected",
    )
    l2_batches = graphene.List(
        graphene.NonNull(L2Batch), required=True, first=graphene.Int(default_value=20)
    )
    me = graphene.Field(Me, required=True)

    @staticmethod
    def resolve_summary(_root: Any, info: Info) -> dict[str, Any] | None:
        found = queries.summary_with_counts(ctx(info).conn())
        if found is None:
            return None
        s, institutions, rate = found
        return {
            "chain_id": s.chain_id,
            "height": s.height,
            "final_height": s.height,
            "last_hash": s.last_hash.hex(),
            "tx_count": s.tx_count,
            "ok_count": s.ok_count,
            "institution_count": institutions,
            "recent_tps": round(rate.tps, 3),
        }

    @staticmethod
    def resolve_blocks(_root: Any, info: Info, first: int, after: str | None = None) -> Any:
        before = decode_cursor(after, "b", 1)
        context = ctx(info)
        rows = read.latest_blocks(context.conn(), first + 1, None if before is None else before[0])
        return connection(listed(context, rows), first, lambda b: encode_cursor("b", b.height))

    @staticmethod
    def resolve_block(
        _root: Any, info: Info, height: int | None = None, hash: str | None = None
    ) -> read.Block | None:
        if height is not None:
            return read.block_by_height(ctx(info).conn(), height)
        if hash is not None:
            return read.block_by_hash(ctx(info).conn(), hex_bytes(hash, "hash"))
        raise GatewayError("give the block's height or hash")

    @staticmethod
    def resolve_transactions(
        _root: Any, info: Info, first: int, after: str | None = None, sender: str | None = None
    ) -> Any:
        context = ctx(info)
        if sender is not None:
            return sender_page(context, hex_bytes(sender, "sender"), first, after)
        before = decode_cursor(after, "t", 2)
        rows = queries.latest_transactions(
            context.conn(), first + 1, None if before is None else (before[0], before[1])
        )
        return connection(listed(context, rows), first, tx_cursor)

    @staticmethod
    def resolve_transaction(_root: Any, info: Info, id: str) -> read.Transaction | None:
        entries = read.transactions_by_id(ctx(info).conn(), hex_bytes(id, "id"))
        accepted = [e for e in entries if e.result_code == 0]
        chosen = accepted or entries
        return chosen[0] if chosen else None

    @staticmethod
    def resolve_key_set_transactions(
        _root: Any, info: Info, after_height: int, first: int
    ) -> list[read.Transaction]:
        context = ctx(info)
        rows = queries.accepted_of_operations(
            context.conn(), list(KEY_SET_OPERATIONS), after_height, first
        )
        return listed(context, rows)

    @staticmethod
    def resolve_institutions(_root: Any, info: Info) -> list[read.Institution]:
        context = ctx(info)
        found = read.institutions(context.conn())
        context.listed["Key"] = [k for i in found for k in i.operators]
        return found

    @staticmethod
    def resolve_proposals(_root: Any, info: Info, first: int) -> list[read.Proposal]:
        return read.proposals(ctx(info).conn(), limit=first)

    @staticmethod
    def resolve_identity(_root: Any, info: Info, key_id: str) -> read.Key | None:
        return queries.key_by_id(ctx(info).conn(), hex_bytes(key_id, "keyId"))

    @staticmethod
    def resolve_identities(
        _root: Any, info: Info, institution: str, first: int, role: str | None = None
    ) -> list[read.Key]:
        context = ctx(info)
        return listed(context, read.identities(context.conn(), institution, role, limit=first))

    @staticmethod
    def resolve_devices(_root: Any, info: Info, institution: str, first: int) -> list[read.Key]:
        context = ctx(info)
        return listed(context, read.devices(context.conn(), institution, limit=first))

    @staticmethod
    def resolve_anchor(_root: Any, info: Info, data_id: str) -> read.Anchor | None:
        return read.anchor(ctx(info).conn(), data_id)

    @staticmethod
    def resolve_anchors(_root: Any, info: Info, institution: str, first: int) -> list[read.Anchor]:
        return read.anchors(ctx(info).conn(), institution, limit=first)

    @staticmethod
    def resolve_asset(_root: Any, info: Info, asset_id: str) -> read.Asset | None:
        return read.asset(ctx(info).conn(), asset_id)

    @staticmethod
    def resolve_record_proof(
        _root: Any, info: Info, device_key_id: str, sequence: int
    ) -> dict[str, Any] | None:
        key_id = hex_bytes(device_key_id, "deviceKeyId")
        try:
            return record_proof_json(ctx(info).conn(), key_id, sequence)
        except psycopg.errors.UndefinedTable:
            return None  # no Layer-2 store in this database (its batcher never ran)

    @staticmethod
    def resolve_l2_batches(_root: Any, info: Info, first: int) -> list[read.L2Batch]:
        return read.l2_batches(ctx(info).conn(), limit=first)

    @staticmethod
    def resolve_me(_root: Any, info: Info) -> dict[str, Any]:
        claims = ctx(info).claims
        require(claims, None)
        assert claims is not None
        return {
            "sub": claims.sub,
            "institution": claims.inst,
            "groups": list(claims.groups),
            "permissions": sorted(claims.perms),
            "expires_at": claims.exp,
        }


class MutationError(graphene.ObjectType):
    """Why a mutation was refused: a stable ``code`` and a human ``message``."""

    code = graphene.String(required=True)
    message = graphene.String(required=True)


class LoginPayload(graphene.ObjectType):
    token = graphene.String()
    expires_at = graphene.Int()
    device_token = graphene.String(
        description="keep it and send it with the next logins of this user from this client: "
        "failed logins of other clients then never block this one"
    )
    me = graphene.Field(Me)
    error = graphene.Field(MutationError)


class SubmitPayload(graphene.ObjectType):
    tx_id = graphene.String()
    sender = graphene.String()
    nonce = graphene.BigInt()
    operation = graphene.String()
    error = graphene.Field(MutationError)


class UserPayload(graphene.ObjectType):
    user_id = graphene.String()
    error = graphene.Field(MutationError)


class OkPayload(graphene.ObjectType):
    ok = graphene.Boolean(required=True)
    error = graphene.Field(MutationError)


class GovernancePayload(graphene.ObjectType):
    """A governance transaction's outcome; a rejection also sets ``error`` (its result code)."""

    tx_id = graphene.String()
    height = graphene.Int()
    result = graphene.String(description="result code name (OK when applied)")
    error = graphene.Field(MutationError)


def _failure(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


def guarded(permission: str | None, action: Callable[[RequestContext, Claims | None], Any]) -> Any:
    """Run ``action`` and turn every refusal into a typed ``error`` payload."""

    def run(info: Info) -> Any:
        context = ctx(info)
        try:
            if permission is not None:
                require(context.claims, permission or None)
            return action(context, context.claims)
        except GatewayError as exc:
            return _failure(exc.code, exc.message)
        except IamError as exc:
            return _failure(exc.code.upper(), str(exc))
        except Exception as exc:
            log.exception("mutation failed", extra={"type": type(exc).__name__})
            return _failure("INTERNAL_ERROR", "the operation failed; see the gateway's log")

    return run


def _accounts(context: RequestContext) -> Any:
    if context.services.accounts is None:
        raise Unavailable("user management is not configured on this gateway")
    return context.services.accounts


def _sub(claims: Claims | None) -> str:
    assert claims is not None
    return claims.sub


class Mutation(graphene.ObjectType):
    login = graphene.Field(
        LoginPayload,
        required=True,
        username=graphene.String(required=True),
        password=graphene.String(required=True),
        device_token=graphene.String(description="the deviceToken of a previous login"),
    )
    submit_transaction = graphene.Field(
        SubmitPayload,
        required=True,
        envelope=graphene.String(required=True),
        description="a signed TxEnvelope (Avro single-object bytes), base64",
    )
    create_user = graphene.Field(
        UserPayload,
        required=True,
        login=graphene.String(required=True),
        password=graphene.String(required=True),
        email=graphene.String(),
        name=graphene.String(),
    )
    disable_user = graphene.Field(
        UserPayload,
        required=True,
        user_id=graphene.String(required=True),
        reason=graphene.String(default_value=""),
    )
    forget_user = graphene.Field(
        UserPayload,
        required=True,
        user_id=graphene.String(required=True),
        description="crypto-shred a user (irreversible): their data key is destroyed and the "
        "key-encryption key rotated, so no copy of their personal data can be decrypted",
    )
    create_group = graphene.Field(
        OkPayload,
        required=True,
        args={
            "group": graphene.String(required=True),
            "description": graphene.String(default_value=""),
        },
    )
    add_group_member = graphene.Field(
        OkPayload,
        required=True,
        user_id=graphene.String(required=True),
        group=graphene.String(required=True),
    )
    grant_permission = graphene.Field(
        OkPayload,
        required=True,
        subject=graphene.String(required=True),
        permission=graphene.String(required=True),
    )
    revoke_permission = graphene.Field(
        OkPayload,
        required=True,
        subject=graphene.String(required=True),
        permission=graphene.String(required=True),
    )
    revoke_all_tokens = graphene.Field(
        OkPayload, required=True, user_id=graphene.String(required=True)
    )
    bootstrap_admin = graphene.Field(
        UserPayload,
        required=True,
        setup_credential=graphene.String(required=True),
        login=graphene.String(required=True),
        password=graphene.String(required=True),
        description="create the first administrator with the credential `pantheon up` printed",
    )
    propose_member = graphene.Field(
        GovernancePayload,
        required=True,
        institution_id=graphene.String(required=True),
        governance_public_key=graphene.String(required=True, description="Ed25519, hex"),
        operator_public_keys=graphene.List(
            graphene.NonNull(graphene.String), required=True, description="Ed25519, hex"
        ),
    )
    propose_removal = graphene.Field(
        GovernancePayload,
        required=True,
        institution_id=graphene.String(required=True),
        reason=graphene.String(default_value=""),
    )
    cast_vote = graphene.Field(
        GovernancePayload,
        required=True,
        proposal_id=graphene.String(required=True),
        approve=graphene.Boolean(required=True),
    )

    @staticmethod
    def resolve_login(
        _root: Any, info: Info, username: str, password: str, device_token: str | None = None
    ) -> Any:
        def act(context: RequestContext, _claims: Claims | None) -> dict[str, Any]:
            token = _accounts(context).login(username, password, context.source, device_token)
            c = token.claims
            me = {
                "sub": c.sub,
                "institution": c.inst,
                "groups": list(c.groups),
                "permissions": sorted(c.perms),
                "expires_at": c.exp,
            }
            device = token.device_token or None
            return {"token": token.value, "expires_at": c.exp, "me": me, "device_token": device}

        return guarded(None, act)(info)

    @staticmethod
    def resolve_submit_transaction(_root: Any, info: Info, envelope: str) -> Any:
        def act(context: RequestContext, _claims: Claims | None) -> dict[str, Any]:
            try:
                raw = base64.b64decode(envelope, validate=True)
            except (binascii.Error, ValueError):
                return _failure("MALFORMED", "envelope must be base64")
            try:
                tx = parse_tx(raw)
            except TxRejected as exc:
                return _failure(exc.code.name, f"the envelope was refused: {exc.code.name}")
            summary = read.summary(context.conn())
            if summary is not None and tx.chain_id != summary.chain_id:
                return _failure("WRONG_CHAIN", f"this gateway serves chain {summary.chain_id}")
            if context.services.submitter is None:
                raise Unavailable("this gateway cannot submit transactions")
            context.services.submitter.submit(raw, tx.sender)
            return {
                "tx_id": tx.tx_id.hex(),
                "sender": tx.sender.hex(),
                "nonce": tx.nonce,
                "operation": tx.operation,
            }

        return guarded(WRITE, act)(info)

    @staticmethod
    def resolve_create_user(
        _root: Any,
        info: Info,
        login: str,
        password: str,
        email: str | None = None,
        name: str | None = None,
    ) -> Any:
        profile = {k: v for k, v in (("email", email), ("name", name)) if v}
        return guarded(
            ADMIN,
            lambda c, cl: {"user_id": _accounts(c).create_user(_sub(cl), login, password, profile)},
        )(info)

    @staticmethod
    def resolve_disable_user(_root: Any, info: Info, user_id: str, reason: str) -> Any:
        def act(context: RequestContext, claims: Claims | None) -> dict[str, Any]:
            _accounts(context).disable_user(_sub(claims), user_id, reason)
            return {"user_id": user_id}

        return guarded(ADMIN, act)(info)

    @staticmethod
    def resolve_forget_user(_root: Any, info: Info, user_id: str) -> Any:
        def act(context: RequestContext, claims: Claims | None) -> dict[str, Any]:
            _accounts(context).forget_user(_sub(claims), user_id)
            return {"user_id": user_id}

        return guarded(ADMIN, act)(info)

    @staticmethod
    def resolve_create_group(_root: Any, info: Info, group: str, description: str) -> Any:
        return _ok(info, lambda a, s: a.create_group(s, group, description))

    @staticmethod
    def resolve_add_group_member(_root: Any, info: Info, user_id: str, group: str) -> Any:
        return _ok(info, lambda a, s: a.add_member(s, user_id, group))

    @staticmethod
    def resolve_grant_permission(_root: Any, info: Info, subject: str, permission: str) -> Any:
        return _ok(info, lambda a, s: a.grant(s, subject, permission))

    @staticmethod
    def resolve_revoke_permission(_root: Any, info: Info, subject: str, permission: str) -> Any:
        return _ok(info, lambda a, s: a.revoke(s, subject, permission))

    @staticmethod
    def resolve_revoke_all_tokens(_root: Any, info: Info, user_id: str) -> Any:
        return _ok(info, lambda a, s: a.revoke_all_tokens(s, user_id))

    @staticmethod
    def resolve_bootstrap_admin(
        _root: Any, info: Info, setup_credential: str, login: str, password: str
    ) -> Any:
        def act(context: RequestContext, _claims: Claims | None) -> dict[str, Any]:
            accounts = _accounts(context)
            return {"user_id": accounts.bootstrap_admin(setup_credential, login, password, {})}

        return guarded(None, act)(info)

    @staticmethod
    def resolve_propose_member(
        root: Any,
        info: Info,
        institution_id: str,
        governance_public_key: str,
        operator_public_keys: list[str],
    ) -> Any:
        def act(gov: Governance, context: RequestContext) -> Outcome:
            governance = hex_bytes(governance_public_key, "governancePublicKey")
            operators = [hex_bytes(k, "operatorPublicKeys") for k in operator_public_keys]
            return gov.propose_member(context.conn(), institution_id, governance, operators)

        return _governed(root, info, act)

    @staticmethod
    def resolve_propose_removal(root: Any, info: Info, institution_id: str, reason: str) -> Any:
        return _governed(
            root, info, lambda g, c: g.propose_removal(c.conn(), institution_id, reason)
        )

    @staticmethod
    def resolve_cast_vote(root: Any, info: Info, proposal_id: str, approve: bool) -> Any:
        def act(gov: Governance, context: RequestContext) -> Outcome:
            pid = hex_bytes(proposal_id, "proposalId")
            return gov.cast_vote(context.conn(), pid, approve)

        return _governed(root, info, act)


def _governed(root: Any, info: Info, call: Callable[[Governance, RequestContext], Outcome]) -> Any:
    """Run a governance operation with the gateway's key; a rejection is a typed error."""

    def act(context: RequestContext, _claims: Claims | None) -> dict[str, Any]:
        if not isinstance(root, Governance):
            raise GovernanceKeyMissing(
                "this gateway holds no governance key (start it with --keystore)"
            )
        outcome = call(root, context)
        payload: dict[str, Any] = {
            "tx_id": outcome.tx_id.hex(),
            "height": outcome.height,
            "result": outcome.code.name,
        }
        if not outcome.accepted:
            message = f"the chain rejected the transaction: {outcome.code.name}"
            payload["error"] = {"code": outcome.code.name, "message": message}
        return payload

    return guarded(ADMIN, act)(info)


def _ok(info: Info, call: Callable[[Any, str], None]) -> Any:
    def act(context: RequestContext, claims: Claims | None) -> dict[str, Any]:
        call(_accounts(context), _sub(claims))
        return {"ok": True}

    return guarded(ADMIN, act)(info)


class Subscription(graphene.ObjectType):
    new_block = graphene.Field(
        Block, required=True, description="every new final block, oldest first"
    )

    @staticmethod
    def resolve_new_block(root: read.Block, _info: Info) -> read.Block:
        return root


SCHEMA = graphene.Schema(query=Query, mutation=Mutation, subscription=Subscription)
