"""Read API of the chain tables for the gateway: typed rows, keyset pagination, waiting.

Theory of operation
-------------------
* Every function takes a psycopg connection and returns frozen dataclasses; SQL is static
  text with ``%s`` parameters, never values pasted into strings.
* Lists are newest first and paginated by keyset: pass the last item's cursor
  (``before_height`` / ``before=(height, position)`` / ``after`` id) to get the next page;
  each query is served by an index of ``001_chain.sql`` (blocks: primary key; transactions
  by sender: ``transactions_sender``; by id: ``transactions_tx_id``; anchors by institution:
  ``anchors_institution``; keys by institution: ``keys_institution``; assets by owner:
  ``assets_owner``), so pages stay fast at millions of rows.
* :func:`wait_for_height` is read-your-writes by height: it returns once the projection has
  committed block ``height`` (LISTEN on the runner's channel, with polling as a fallback).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from ledger.blocks import BlockHeader, EntryResult
from ledger.members import ValidatorSet, is_member
from ledger.results import ResultCode
from ledger.tx import TxRejected, parse_tx
from projections.runner import CHANNEL


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    height: int
    hash: bytes
    prev_hash: bytes
    first_offset: int
    last_offset: int
    tx_root: bytes
    state_root: bytes
    validator_set_hash: bytes
    timestamp_ms: int
    tx_count: int
    ok_count: int
    certificate: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Transaction:
    height: int
    position: int
    tx_id: bytes
    tx_offset: int
    result_code: int
    sender: bytes | None
    nonce: int | None
    operation: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Key:
    key_id: bytes
    public_key: bytes
    role: str
    institution_id: str
    label: str
    active: bool
    next_nonce: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Institution:
    institution_id: str
    governance_key_id: bytes
    status: str
    effective_height: int
    operators: tuple[Key, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProposalVote:
    institution_id: str
    approve: bool
    height: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Proposal:
    proposal_id: bytes
    kind: str
    institution_id: str
    proposer: str
    created_height: int
    expires_height: int
    status: str
    votes: tuple[ProposalVote, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Anchor:
    data_id: str
    sha256: bytes
    metadata: str
    institution_id: str
    anchored_by: bytes
    height: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Ownership:
    height: int
    position: int
    tx_id: bytes
    owner_key_id: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Asset:
    asset_id: str
    owner_key_id: bytes
    metadata: str
    registered_height: int
    history: tuple[Ownership, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class L2Batch:
    batch_id: str
    merkle_root: bytes
    leaf_count: int
    window_start_ms: int
    window_end_ms: int
    institution_id: str
    committed_by: bytes
    height: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainSummary:
    chain_id: str
    height: int
    last_hash: bytes
    tx_count: int
    ok_count: int


Conn = psycopg.Connection[Any]
_BLOCK = (
    "SELECT height, hash, prev_hash, first_offset, last_offset, tx_root, state_root, "
    "validator_set_hash, timestamp_ms, tx_count, ok_count, certificate FROM chain.blocks "
)
_TX = (
    "SELECT height, position, tx_id, tx_offset, result_code, sender, nonce, operation "
    "FROM chain.transactions "
)
_KEY = "SELECT key_id, public_key, role, institution_id, label, active, next_nonce FROM chain.keys "
_ANCHOR = (
    "SELECT data_id, sha256, metadata, institution_id, anchored_by, height FROM chain.anchors "
)
_BIG = 2**62  # fmt: skip


def _fix(row: dict[str, Any]) -> dict[str, Any]:
    return {k: bytes(v) if isinstance(v, memoryview) else v for k, v in row.items()}


def _all(conn: Conn, cls: type[Any], query: str, params: tuple[Any, ...]) -> list[Any]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(query.encode(), params)
        return [cls(**_fix(r)) for r in cur.fetchall()]


def summary(conn: Conn) -> ChainSummary | None:
    """Chain id, projected height, last hash and transaction counts."""
    rows = _all(conn, ChainSummary, "SELECT chain_id, height, last_hash, tx_count, ok_count "
                "FROM chain.meta", ())  # fmt: skip
    return rows[0] if rows else None


def latest_blocks(conn: Conn, limit: int = 20, before_height: int | None = None) -> list[Block]:
    """Newest blocks first; the next page starts below ``before_height``."""
    before = _BIG if before_height is None else before_height
    return _all(conn, Block, _BLOCK + "WHERE height < %s ORDER BY height DESC LIMIT %s",
                (before, limit))  # fmt: skip


def block_by_height(conn: Conn, height: int) -> Block | None:
    """The block at ``height``."""
    rows = _all(conn, Block, _BLOCK + "WHERE height = %s", (height,))
    return rows[0] if rows else None


def blocks_by_heights(conn: Conn, heights: list[int]) -> dict[int, Block]:
    """The blocks at these heights (absent ones are missing), in one statement."""
    return {b.height: b for b in _all(conn, Block, _BLOCK + "WHERE height = ANY(%s)", (heights,))}


def block_by_hash(conn: Conn, block_hash: bytes) -> Block | None:
    """The block with this hash."""
    rows = _all(conn, Block, _BLOCK + "WHERE hash = %s", (block_hash,))
    return rows[0] if rows else None


def transactions_by_block(
    conn: Conn, height: int, limit: int = 100, after_position: int = -1
) -> list[Transaction]:
    """A block's entries in order, from ``after_position + 1``."""
    return _all(conn, Transaction, _TX + "WHERE height = %s AND position > %s "
                "ORDER BY position LIMIT %s", (height, after_position, limit))  # fmt: skip


def transactions_by_sender(
    conn: Conn, sender: bytes, limit: int = 50, before: tuple[int, int] | None = None
) -> list[Transaction]:
    """A sender's transactions, newest first; ``before`` is the last (height, position) seen."""
    h, p = before if before is not None else (_BIG, 0)
    return _all(conn, Transaction, _TX + "WHERE sender = %s AND (height, position) < (%s, %s) "
                "ORDER BY height DESC, position DESC LIMIT %s", (sender, h, p, limit))  # fmt: skip


def transactions_by_id(conn: Conn, tx_id: bytes) -> list[Transaction]:
    """Every entry with this tx id (a replayed envelope appears again, rejected)."""
    return _all(conn, Transaction, _TX + "WHERE tx_id = %s ORDER BY height, position", (tx_id,))


def institutions(conn: Conn) -> list[Institution]:
    """Every institution with its active operator keys."""
    operators: dict[str, list[Key]] = {}
    for key in _all(conn, Key, _KEY + "WHERE role = 'OPERATOR' AND active "
                    "ORDER BY institution_id, key_id", ()):  # fmt: skip
        operators.setdefault(key.institution_id, []).append(key)
    with conn.cursor() as cur:
        cur.execute("SELECT institution_id, governance_key_id, status, effective_height "
                    "FROM chain.institutions ORDER BY institution_id")  # fmt: skip
        return [
            Institution(institution_id=i, governance_key_id=bytes(g), status=s,
                        effective_height=e, operators=tuple(operators.get(i, ())))
            for i, g, s, e in cur.fetchall()
        ]  # fmt: skip


def proposals(conn: Conn, limit: int = 50, before_height: int | None = None) -> list[Proposal]:
    """Proposals, newest first, with their votes."""
    before = _BIG if before_height is None else before_height
    with conn.cursor() as cur:
        cur.execute(
            "SELECT proposal_id, kind, institution_id, proposer, created_height, "
            "expires_height, status FROM chain.proposals WHERE created_height < %s "
            "ORDER BY created_height DESC, proposal_id LIMIT %s",
            (before, limit),
        )
        props = cur.fetchall()
        ids = [bytes(p[0]) for p in props]
        cur.execute(
            "SELECT proposal_id, institution_id, approve, height FROM chain.proposal_votes "
            "WHERE proposal_id = ANY(%s) ORDER BY height, institution_id",
            (ids,),
        )
        votes: dict[bytes, list[ProposalVote]] = {}
        for pid, inst, approve, height in cur.fetchall():
            votes.setdefault(bytes(pid), []).append(
                ProposalVote(institution_id=inst, approve=approve, height=height)
            )
    return [
        Proposal(proposal_id=bytes(p[0]), kind=p[1], institution_id=p[2], proposer=p[3],
                 created_height=p[4], expires_height=p[5], status=p[6],
                 votes=tuple(votes.get(bytes(p[0]), ())))
        for p in props
    ]  # fmt: skip


def identities(
    conn: Conn, institution_id: str, role: str | None = None, limit: int = 100,
    after: bytes = b"",
) -> list[Key]:  # fmt: skip
    """An institution's keys (``role``: SERVICE, USER, DEVICE, OPERATOR, GOVERNANCE)."""
    if role is None:
        return _all(conn, Key, _KEY + "WHERE institution_id = %s AND key_id > %s "
                    "ORDER BY role, key_id LIMIT %s", (institution_id, after, limit))  # fmt: skip
    return _all(conn, Key, _KEY + "WHERE institution_id = %s AND role = %s AND key_id > %s "
                "ORDER BY key_id LIMIT %s", (institution_id, role, after, limit))  # fmt: skip


def devices(conn: Conn, institution_id: str, limit: int = 100, after: bytes = b"") -> list[Key]:
    """An institution's device keys."""
    return identities(conn, institution_id, "DEVICE", limit, after)


def anchor(conn: Conn, data_id: str) -> Anchor | None:
    """One anchored data object."""
    rows = _all(conn, Anchor, _ANCHOR + "WHERE data_id = %s", (data_id,))
    return rows[0] if rows else None


def anchors(
    conn: Conn, institution_id: str, limit: int = 50, before: tuple[int, str] | None = None
) -> list[Anchor]:
    """An institution's anchors, newest first; ``before`` is the last (height, data_id)."""
    h, d = before if before is not None else (_BIG, "")
    return _all(conn, Anchor, _ANCHOR + "WHERE institution_id = %s AND (height < %s OR "
                "(height = %s AND data_id > %s)) ORDER BY height DESC, data_id LIMIT %s",
                (institution_id, h, h, d, limit))  # fmt: skip


def asset(conn: Conn, asset_id: str) -> Asset | None:
    """An asset with its ownership history (oldest first)."""
    with conn.cursor() as cur:
        cur.execute("SELECT asset_id, owner_key_id, metadata, registered_height FROM chain.assets "
                    "WHERE asset_id = %s", (asset_id,))  # fmt: skip
        row = cur.fetchone()
        if row is None:
            return None
        cur.execute("SELECT height, position, tx_id, owner_key_id FROM chain.asset_owners "
                    "WHERE asset_id = %s ORDER BY height, position", (asset_id,))  # fmt: skip
        history = tuple(Ownership(height=h, position=p, tx_id=bytes(t), owner_key_id=bytes(o))
                        for h, p, t, o in cur.fetchall())  # fmt: skip
    return Asset(asset_id=row[0], owner_key_id=bytes(row[1]), metadata=row[2],
                 registered_height=row[3], history=history)  # fmt: skip


def assets_of(conn: Conn, owner_key_id: bytes, limit: int = 100, after: str = "") -> list[str]:
    """Ids of the assets a key owns."""
    rows = conn.execute("SELECT asset_id FROM chain.assets WHERE owner_key_id = %s AND "
                        "asset_id > %s ORDER BY asset_id LIMIT %s",
                        (owner_key_id, after, limit)).fetchall()  # fmt: skip
    return [r[0] for r in rows]


def l2_batches(conn: Conn, limit: int = 50, before_height: int | None = None) -> list[L2Batch]:
    """Layer-2 batches, newest first."""
    before = _BIG if before_height is None else before_height
    return _all(conn, L2Batch, "SELECT * FROM chain.l2_batches WHERE height < %s "
                "ORDER BY height DESC, batch_id LIMIT %s", (before, limit))  # fmt: skip


def wait_for_height(conn: Conn, height: int, timeout: float) -> bool:
    """Wait until block ``height`` is projected; False on timeout. ``conn`` must be in
    autocommit mode (it LISTENs)."""
    deadline = time.monotonic() + timeout
    conn.execute(f"LISTEN {CHANNEL}")
    while True:
        current = summary(conn)
        if current is not None and current.height >= height:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        for _ in conn.notifies(timeout=min(remaining, 0.5), stop_after=1):
            pass


@dataclass(frozen=True, slots=True)
class CertifiedBlock:
    """A final block as proofs need it: header, stored certificate, hash, entries in order."""

    header: BlockHeader
    certificate: bytes
    block_hash: bytes
    entries: list[EntryResult]


def certified_block(conn: Conn, height: int) -> CertifiedBlock | None:
    """The final block at ``height`` with its entries (for inclusion proofs)."""
    block = conn.execute(
        "SELECT height, prev_hash, first_offset, last_offset, tx_root, state_root, "
        "validator_set_hash, timestamp_ms, certificate, hash FROM chain.blocks WHERE height = %s",
        (height,),
    ).fetchone()
    if block is None:
        return None
    entries = [
        EntryResult(tx_id=bytes(t), offset=int(o), code=ResultCode(c))
        for t, o, c in conn.execute(
            "SELECT tx_id, tx_offset, result_code FROM chain.transactions WHERE height = %s "
            "ORDER BY position",
            (height,),
        ).fetchall()
    ]
    header = BlockHeader(
        height=int(block[0]),
        prev_hash=bytes(block[1]),
        first_offset=int(block[2]),
        last_offset=int(block[3]),
        tx_root=bytes(block[4]),
        state_root=bytes(block[5]),
        validator_set_hash=bytes(block[6]),
        timestamp_ms=int(block[7]),
    )
    return CertifiedBlock(
        header=header, certificate=bytes(block[8]), block_hash=bytes(block[9]), entries=entries
    )


def accepted_tx(
    conn: Conn, height: int, operation: str, arg: str, value: object
) -> tuple[int, int, bytes] | None:
    """(position, tx offset, envelope) of the accepted ``operation`` at ``height`` whose
    argument ``arg`` equals ``value`` (the anchor of a data id, the commit of a batch)."""
    rows = conn.execute(
        "SELECT position, tx_offset, envelope FROM chain.transactions WHERE height = %s "
        "AND operation = %s AND result_code = 0 ORDER BY position",
        (height, operation),
    ).fetchall()
    for position, offset, envelope in rows:
        try:
            tx = parse_tx(bytes(envelope))
        except TxRejected:
            continue
        if tx.args.get(arg) == value:
            return int(position), int(offset), bytes(envelope)
    return None


def validator_set_candidate(conn: Conn, height: int) -> ValidatorSet | None:
    """The validator set of ``height`` as this projection's *current* institutions and
    operator keys state it (an untrusted candidate: :mod:`ledger.outcomes` adopts it only if
    its hash is the one a certified header names). None before the genesis is projected."""
    rows = conn.execute(
        "SELECT i.institution_id, i.status, i.effective_height, k.key_id, k.public_key "
        "FROM chain.institutions i LEFT JOIN chain.keys k "
        "ON k.key_id = ANY(i.operator_key_ids) AND k.active ORDER BY i.institution_id"
    ).fetchall()
    if not rows:
        return None
    members: dict[str, dict[bytes, bytes]] = {}
    for inst, status, effective, key_id, public_key in rows:
        if not is_member({"status": status, "effective_height": effective}, height):
            continue
        operators = members.setdefault(inst, {})
        if key_id is not None:
            operators[bytes(key_id)] = bytes(public_key)
    return ValidatorSet(height=height, members=members)


def validator_set_source(dsn: str) -> Callable[[int], ValidatorSet | None]:
    """:func:`validator_set_candidate` over a short connection per call (it is asked only
    when membership changed), for :class:`ledger.outcomes.OutcomeVerifier`."""

    def source(height: int) -> ValidatorSet | None:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            return validator_set_candidate(conn, height)

    return source
