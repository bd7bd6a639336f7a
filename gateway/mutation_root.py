"""The GraphQL ``Mutation`` root: submitting transactions, login, user administration and
governance.

Every mutation returns a payload with either its result or a typed ``error`` (``code`` +
``message``); nothing is raised to the client from a mutation. Resolvers check the caller's
permission again (defense in depth; :mod:`gateway.field_permissions`). Governance mutations
(``proposeMember``, ``proposeRemoval``, ``castVote``) are signed with the institution's
governance key by :class:`gateway.governance.Governance`, which the app passes as the root
value of mutations (None: the gateway has no keystore).
"""

# mypy: disallow-subclassing-any=False
from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable
from typing import Any

import graphene

from gateway.auth.tokens import Claims
from gateway.authn import require
from gateway.context import RequestContext, hex_bytes
from gateway.errors import GatewayError, Unavailable
from gateway.field_permissions import ADMIN, WRITE
from gateway.governance import Governance, GovernanceKeyMissing, Outcome
from gateway.iam.errors import IamError
from gateway.state_types import (
    Me,
)
from gateway.types import (
    Info,
    ctx,
)
from ledger.tx import TxRejected, parse_tx
from projections import read

log = logging.getLogger("pantheon.gateway")


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
        governance_key_proof=graphene.String(
            required=True,
            description="the governance key's proof of possession, hex "
            "(`pantheon keys prove-member` by the candidate, D63)",
        ),
        operator_key_proofs=graphene.List(
            graphene.NonNull(graphene.String),
            required=True,
            description="each operator key's proof of possession, hex, in the order of "
            "operatorPublicKeys",
        ),
        description="propose admitting an institution; every key carries its proof of "
        "possession, or the chain refuses the proposal (BAD_KEY_PROOF)",
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
        *,
        institution_id: str,
        governance_public_key: str,
        operator_public_keys: list[str],
        governance_key_proof: str,
        operator_key_proofs: list[str],
    ) -> Any:
        def act(gov: Governance, context: RequestContext) -> Outcome:
            governance = hex_bytes(governance_public_key, "governancePublicKey")
            operators = [hex_bytes(k, "operatorPublicKeys") for k in operator_public_keys]
            return gov.propose_member(
                context.conn(),
                institution_id,
                governance,
                operators,
                governance_key_proof=hex_bytes(governance_key_proof, "governanceKeyProof", 64),
                operator_key_proofs=[
                    hex_bytes(p, "operatorKeyProofs", 64) for p in operator_key_proofs
                ],
            )

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
