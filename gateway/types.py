"""GraphQL object types over the typed rows of :mod:`projections.read`.

Resolvers receive the frozen dataclasses of the read API as their root; byte strings are
exposed as lowercase hex, 64-bit numbers as ``BigInt``, times as ISO-8601 (UTC) plus the
milliseconds. Lists of blocks and transactions are Relay-style connections with opaque
cursors (:func:`connection`); a page asks the database for one row more than it returns to
know whether there is a next page.
"""

# mypy: disallow-subclassing-any=False
from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache, partial
from typing import Any

import graphene
from graphql import GraphQLResolveInfo as Info

from gateway.context import RequestContext, decode_cursor, encode_cursor, hexs
from gateway.envelopes import arguments_of, envelope_of, leaves_of
from projections.read import Conn, queries

__all__ = ["Info", "connection", "ctx", "encode_cursor", "listed", "sender_page", "tx_cursor"]
from ledger.results import ResultCode
from projections import read


def ctx(info: Info) -> RequestContext:
    context: RequestContext = info.context
    return context


def _hex_field(name: str, description: str) -> graphene.Field:
    def resolve(root: Any, _info: Info) -> str | None:
        return hexs(getattr(root, name))

    return graphene.Field(graphene.String, description=description, resolver=resolve)


class PageInfo(graphene.ObjectType):
    has_next_page = graphene.Boolean(required=True)
    end_cursor = graphene.String()


class CertificateVote(graphene.ObjectType):
    """One operator's signature in a block's quorum certificate."""

    position = graphene.Int(required=True)
    institution_id = graphene.String(required=True)
    operator_key_id = _hex_field("operator_key_id", "key id of the signing operator")
    public_key = _hex_field("public_key", "the operator's Ed25519 public key")
    signature = _hex_field("signature", "Ed25519 signature of the vote")


class QuorumCertificate(graphene.ObjectType):
    """The votes that made a block final, and the certificate's canonical bytes."""

    height = graphene.Int(required=True)
    block_hash = graphene.String(required=True)
    encoded = graphene.String(required=True, description="canonical certificate, hex")
    votes = graphene.List(graphene.NonNull(CertificateVote), required=True)

    @staticmethod
    def resolve_votes(root: read.Block, info: Info) -> list[queries.CertificateVote]:
        context = ctx(info)
        siblings = (b.height for b in context.listed.get("Block", ()))
        batch = context.batch("votes", queries.certificate_votes_of)
        return batch.get(context.conn(), root.height, siblings) or []

    @staticmethod
    def resolve_block_hash(root: read.Block, _info: Info) -> str:
        return root.hash.hex()

    @staticmethod
    def resolve_encoded(root: read.Block, _info: Info) -> str:
        return root.certificate.hex()


@lru_cache(maxsize=4096)  # the same recent blocks are formatted request after request
def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


class Receipt(graphene.ObjectType):
    """The outcome of a transaction in a final block."""

    code = graphene.String(required=True, description="result code: OK or why it was rejected")
    ok = graphene.Boolean(required=True)
    height = graphene.Int(required=True)
    position = graphene.Int(required=True)
    block_hash = graphene.String()

    @staticmethod
    def resolve_code(root: read.Transaction, _info: Info) -> str:
        return _code(root.result_code)

    @staticmethod
    def resolve_ok(root: read.Transaction, _info: Info) -> bool:
        return root.result_code == 0

    @staticmethod
    def resolve_block_hash(root: read.Transaction, info: Info) -> str | None:
        block = block_of(ctx(info), root.height)
        return None if block is None else block.hash.hex()


def _code(value: int) -> str:
    try:
        return ResultCode(value).name
    except ValueError:
        return str(value)


class Identity(graphene.ObjectType):
    """A key registered on chain (an address): governance, operator, service, user, device."""

    key_id = _hex_field("key_id", "SHA-256 of the public key: the address")
    public_key = _hex_field("public_key", "raw Ed25519 public key")
    role = graphene.String(required=True)
    institution_id = graphene.String(required=True)
    label = graphene.String(required=True)
    active = graphene.Boolean(required=True)
    next_nonce = graphene.BigInt(required=True)
    transactions = graphene.Field(
        lambda: TransactionConnection,
        required=True,
        first=graphene.Int(default_value=20),
        after=graphene.String(),
    )
    assets = graphene.List(
        graphene.NonNull(graphene.String), required=True, first=graphene.Int(default_value=50)
    )

    @staticmethod
    def resolve_transactions(
        root: read.Key, info: Info, first: int, after: str | None = None
    ) -> dict[str, Any]:
        context = ctx(info)
        before = decode_cursor(after, "t", 2)
        cut = None if before is None else (before[0], before[1])
        fetch = partial(_sender_pages, limit=first + 1, before=cut)
        pages = context.batch(("sender-transactions", first, cut), fetch)
        siblings = (k.key_id for k in context.listed.get("Key", ()))
        rows = pages.get(context.conn(), root.key_id, siblings) or []
        context.listed["Transaction"] = [t for page in pages.values() for t in page]
        return connection(rows, first, tx_cursor)

    @staticmethod
    def resolve_assets(root: read.Key, info: Info, first: int) -> list[str]:
        context = ctx(info)
        fetch = partial(_assets, limit=first)
        siblings = (k.key_id for k in context.listed.get("Key", ()))
        assets = context.batch(("assets", first), fetch).get(context.conn(), root.key_id, siblings)
        return assets or []


class Transaction(graphene.ObjectType):
    """An entry of a final block (rejected entries too, with their result code)."""

    tx_id = _hex_field("tx_id", "SHA-256 of the canonical body")
    height = graphene.Int(required=True)
    position = graphene.Int(required=True)
    offset = graphene.BigInt(required=True, description="offset in the tx topic")
    result = graphene.String(required=True)
    ok = graphene.Boolean(required=True)
    sender = _hex_field("sender", "key id of the signer (null if the entry did not decode)")
    nonce = graphene.BigInt()
    operation = graphene.String()
    receipt = graphene.Field(Receipt, required=True)
    block = graphene.Field(lambda: Block)
    sender_identity = graphene.Field(Identity)
    arguments = graphene.JSONString(
        description="the operation's decoded arguments (bytes as hex); null if the entry "
        "did not decode"
    )
    envelope = graphene.String(
        description="the signed envelope as stored (single-object Avro, hex); null for "
        "TOO_LARGE entries"
    )
    result_code = graphene.Int(required=True, description="numeric result (0 = OK)")

    @staticmethod
    def resolve_offset(root: read.Transaction, _info: Info) -> int:
        return root.tx_offset

    @staticmethod
    def resolve_result(root: read.Transaction, _info: Info) -> str:
        return _code(root.result_code)

    @staticmethod
    def resolve_ok(root: read.Transaction, _info: Info) -> bool:
        return root.result_code == 0

    @staticmethod
    def resolve_receipt(root: read.Transaction, _info: Info) -> read.Transaction:
        return root

    @staticmethod
    def resolve_block(root: read.Transaction, info: Info) -> read.Block | None:
        return block_of(ctx(info), root.height)

    @staticmethod
    def resolve_sender_identity(root: read.Transaction, info: Info) -> read.Key | None:
        if root.sender is None:
            return None
        context = ctx(info)
        siblings = (t.sender for t in context.listed.get("Transaction", ()) if t.sender)
        keys = context.batch("keys", queries.keys_by_ids)
        key: read.Key | None = keys.get(context.conn(), root.sender, siblings)
        context.listed["Key"] = keys.values()  # the next level's siblings
        return key

    @staticmethod
    def resolve_arguments(root: read.Transaction, info: Info) -> dict[str, Any] | None:
        return arguments_of(ctx(info), root)

    @staticmethod
    def resolve_envelope(root: read.Transaction, info: Info) -> str | None:
        return hexs(envelope_of(ctx(info), root))


class TransactionEdge(graphene.ObjectType):
    cursor = graphene.String(required=True)
    node = graphene.Field(Transaction, required=True)


class TransactionConnection(graphene.ObjectType):
    edges = graphene.List(graphene.NonNull(TransactionEdge), required=True)
    page_info = graphene.Field(PageInfo, required=True)


class Block(graphene.ObjectType):
    """A final block: header, counts, quorum certificate and its entries."""

    height = graphene.Int(required=True)
    hash = _hex_field("hash", "block hash")
    prev_hash = _hex_field("prev_hash", "hash of the previous block (genesis for block 1)")
    first_offset = graphene.BigInt(required=True)
    last_offset = graphene.BigInt(required=True)
    tx_root = _hex_field("tx_root", "Merkle root of tx_id || result code")
    state_root = _hex_field("state_root", "state after the block")
    validator_set_hash = _hex_field("validator_set_hash", "validator set of this height")
    timestamp = graphene.String(required=True, description="ISO-8601, UTC")
    timestamp_ms = graphene.Float(required=True)
    tx_count = graphene.Int(required=True)
    ok_count = graphene.Int(required=True)
    certificate = graphene.Field(QuorumCertificate, required=True)
    leaves = graphene.List(
        graphene.NonNull(graphene.String),
        required=True,
        description="tx_root leaves (tx id || result code, hex) of every entry, in order",
    )
    transactions = graphene.Field(
        TransactionConnection,
        required=True,
        first=graphene.Int(default_value=50),
        after=graphene.String(),
    )

    @staticmethod
    def resolve_timestamp(root: read.Block, _info: Info) -> str:
        return _iso(root.timestamp_ms)

    @staticmethod
    def resolve_certificate(root: read.Block, _info: Info) -> read.Block:
        return root

    @staticmethod
    def resolve_leaves(root: read.Block, info: Info) -> list[str]:
        return leaves_of(ctx(info), root)

    @staticmethod
    def resolve_transactions(
        root: read.Block, info: Info, first: int, after: str | None = None
    ) -> dict[str, Any]:
        start = decode_cursor(after, "p", 2)
        pos = -1 if start is None else start[1]
        context = ctx(info)
        fetch = partial(_block_pages, limit=first + 1, after_position=pos)
        pages = context.batch(("block-transactions", first, pos), fetch)
        siblings = (b.height for b in context.listed.get("Block", ()))
        rows = pages.get(context.conn(), root.height, siblings) or []
        # the entries of every listed block are the siblings of the next level
        context.listed["Transaction"] = [t for page in pages.values() for t in page]
        return connection(rows, first, lambda t: encode_cursor("p", t.height, t.position))


class BlockEdge(graphene.ObjectType):
    cursor = graphene.String(required=True)
    node = graphene.Field(Block, required=True)


class BlockConnection(graphene.ObjectType):
    edges = graphene.List(graphene.NonNull(BlockEdge), required=True)
    page_info = graphene.Field(PageInfo, required=True)


def _block_pages(
    conn: Conn, heights: list[int], *, limit: int, after_position: int
) -> dict[int, list[read.Transaction]]:
    return queries.transactions_of_blocks(conn, heights, limit, after_position)


def _sender_pages(
    conn: Conn, senders: list[bytes], *, limit: int, before: tuple[int, int] | None
) -> dict[bytes, list[read.Transaction]]:
    return queries.transactions_of_senders(conn, senders, limit, before)


def _assets(conn: Conn, owners: list[bytes], *, limit: int) -> dict[bytes, list[str]]:
    return queries.assets_of_owners(conn, owners, limit)


def block_of(context: RequestContext, height: int) -> read.Block | None:
    """The block at ``height``, batched with the blocks of the listed entries."""
    siblings = (t.height for t in context.listed.get("Transaction", ()))
    block: read.Block | None = context.batch("blocks", read.blocks_by_heights).get(
        context.conn(), height, siblings
    )
    return block


def listed(context: RequestContext, rows: list[Any]) -> list[Any]:
    """Record a list of rows whose nested lookups should be batched (see ``Batch``)."""
    if rows:
        context.listed[type(rows[0]).__name__] = rows
    return rows


def connection(rows: Sequence[Any], first: int, cursor: Callable[[Any], str]) -> dict[str, Any]:
    """A connection page of ``rows`` (fetched with ``first + 1`` to detect a next page)."""
    page = list(rows[: max(first, 0)])
    edges = [{"cursor": cursor(r), "node": r} for r in page]
    return {
        "edges": edges,
        "page_info": {
            "has_next_page": len(rows) > len(page),
            "end_cursor": edges[-1]["cursor"] if edges else None,
        },
    }


def tx_cursor(tx: read.Transaction) -> str:
    return encode_cursor("t", tx.height, tx.position)


def sender_page(
    context: RequestContext, sender: bytes, first: int, after: str | None
) -> dict[str, Any]:
    """A sender's transactions, newest first."""
    before = decode_cursor(after, "t", 2)
    rows = read.transactions_by_sender(
        context.conn(), sender, first + 1, None if before is None else (before[0], before[1])
    )
    return connection(listed(context, rows), first, tx_cursor)
