"""The GraphQL ``Query`` root: the chain's read model, the caller's own claims (``me``) and
record proofs. Every field needs ``chain:read`` but ``me`` (any valid token; see
:mod:`gateway.field_permissions`)."""

# mypy: disallow-subclassing-any=False
from __future__ import annotations

from typing import Any

import graphene
import psycopg

from gateway.authn import require
from gateway.context import decode_cursor, hex_bytes
from gateway.envelopes import KEY_SET_OPERATIONS
from gateway.errors import BadInput, GatewayError
from gateway.state_types import (
    Anchor,
    Asset,
    ChainSummary,
    Institution,
    L2Batch,
    Me,
    Proposal,
    recent_tps,
)
from gateway.types import (
    Block,
    BlockConnection,
    Identity,
    Info,
    Transaction,
    TransactionConnection,
    connection,
    ctx,
    encode_cursor,
    listed,
    sender_page,
    tx_cursor,
)
from projections import read
from projections.read import queries
from readers.proofs import record_proof_json

#: an admission names a governance key and at most MAX_OPERATORS (16) operator keys
MAX_KEYS_ASKED = 17


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
    key_registrations = graphene.List(
        graphene.NonNull(Transaction),
        required=True,
        key_ids=graphene.List(graphene.NonNull(graphene.String), required=True),
        description="accepted RegisterIdentity and RotateKey entries of the blocks where one "
        "of these keys first appeared, oldest first; the explorer checks with them that an "
        "admission's keys were free, as the chain does (D54)",
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
            "recent_tps": recent_tps(rate),
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
    def resolve_key_registrations(
        _root: Any, info: Info, key_ids: list[str]
    ) -> list[read.Transaction]:
        if len(key_ids) > MAX_KEYS_ASKED:
            raise BadInput(f"keyIds lists at most {MAX_KEYS_ASKED} keys", argument="keyIds")
        wanted = [hex_bytes(k, "keyIds") for k in key_ids]
        context = ctx(info)
        return listed(context, queries.registrations_of(context.conn(), wanted))

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
