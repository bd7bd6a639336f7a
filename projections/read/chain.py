"""Reads of the chain tables for the gateway: typed rows, keyset pagination, waiting.

Theory of operation
-------------------
* Every function takes a psycopg connection and returns frozen dataclasses; SQL is static
  text with ``%s`` parameters, never values pasted into strings.
* Lists are newest first and paginated by keyset: pass the last item's cursor
  (``before_height`` / ``before=(height, position)`` / ``after`` id) to get the next page;
  each query is served by an index of ``001_chain.sql`` (blocks: primary key; transactions
  by sender: ``transactions_sender``; by id: ``transactions_tx_id``; anchors by institution:
  ``anchors_institution``; keys by institution: ``keys_institution``; assets by owner:
  ``assets_owner``; accepted entries by operation, for the explorer's replay:
  ``transactions_operation`` of ``004``), so pages stay fast at millions of rows.
* :func:`wait_for_height` is read-your-writes by height: it returns once the projection has
  committed block ``height`` (LISTEN on the runner's channel, with polling as a fallback).
"""

from __future__ import annotations

import time

from projections.read.model import (
    ANCHOR,
    BIG,
    BLOCK,
    KEY,
    TX,
    Anchor,
    Asset,
    Block,
    ChainSummary,
    Institution,
    Key,
    L2Batch,
    Ownership,
    Proposal,
    ProposalVote,
    Transaction,
    fetch_all,
    limited,
)
from projections.runner import CHANNEL
from runtime.pg import Conn


def summary(conn: Conn) -> ChainSummary | None:
    """Chain id, projected height, last hash and transaction counts."""
    rows = fetch_all(
        conn,
        ChainSummary,
        "SELECT chain_id, height, last_hash, tx_count, ok_count FROM chain.meta",
        (),
    )
    return rows[0] if rows else None


def latest_blocks(conn: Conn, limit: int = 20, before_height: int | None = None) -> list[Block]:
    """Newest blocks first; the next page starts below ``before_height``."""
    before = BIG if before_height is None else before_height
    query = limited(BLOCK + "WHERE height < %s ORDER BY height DESC", limit)
    return fetch_all(conn, Block, query, (before,))


def block_by_height(conn: Conn, height: int) -> Block | None:
    """The block at ``height``."""
    rows = fetch_all(conn, Block, BLOCK + "WHERE height = %s", (height,))
    return rows[0] if rows else None


def blocks_by_heights(conn: Conn, heights: list[int]) -> dict[int, Block]:
    """The blocks at these heights (absent ones are missing), in one statement."""
    return {
        b.height: b for b in fetch_all(conn, Block, BLOCK + "WHERE height = ANY(%s)", (heights,))
    }


def block_by_hash(conn: Conn, block_hash: bytes) -> Block | None:
    """The block with this hash."""
    rows = fetch_all(conn, Block, BLOCK + "WHERE hash = %s", (block_hash,))
    return rows[0] if rows else None


def transactions_by_block(
    conn: Conn, height: int, limit: int = 100, after_position: int = -1
) -> list[Transaction]:
    """A block's entries in order, from ``after_position + 1``."""
    return fetch_all(
        conn,
        Transaction,
        TX + "WHERE height = %s AND position > %s ORDER BY position LIMIT %s",
        (height, after_position, limit),
    )


def transactions_by_sender(
    conn: Conn, sender: bytes, limit: int = 50, before: tuple[int, int] | None = None
) -> list[Transaction]:
    """A sender's transactions, newest first; ``before`` is the last (height, position) seen."""
    h, p = before if before is not None else (BIG, 0)
    return fetch_all(
        conn,
        Transaction,
        limited(
            TX + "WHERE sender = %s AND (height, position) < (%s, %s) "
            "ORDER BY height DESC, position DESC",
            limit,
        ),
        (sender, h, p),
    )


def transactions_by_id(conn: Conn, tx_id: bytes) -> list[Transaction]:
    """Every entry with this tx id (a replayed envelope appears again, rejected)."""
    return fetch_all(conn, Transaction, TX + "WHERE tx_id = %s ORDER BY height, position", (tx_id,))


def institutions(conn: Conn) -> list[Institution]:
    """Every institution with its active operator keys."""
    operators: dict[str, list[Key]] = {}
    for key in fetch_all(
        conn, Key, KEY + "WHERE role = 'OPERATOR' AND active ORDER BY institution_id, key_id", ()
    ):
        operators.setdefault(key.institution_id, []).append(key)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT institution_id, governance_key_id, status, effective_height "
            "FROM chain.institutions ORDER BY institution_id"
        )
        return [
            Institution(
                institution_id=i,
                governance_key_id=bytes(g),
                status=s,
                effective_height=e,
                operators=tuple(operators.get(i, ())),
            )
            for i, g, s, e in cur.fetchall()
        ]


def proposals(conn: Conn, limit: int = 50, before_height: int | None = None) -> list[Proposal]:
    """Proposals, newest first, with their votes."""
    before = BIG if before_height is None else before_height
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
        Proposal(
            proposal_id=bytes(p[0]),
            kind=p[1],
            institution_id=p[2],
            proposer=p[3],
            created_height=p[4],
            expires_height=p[5],
            status=p[6],
            votes=tuple(votes.get(bytes(p[0]), ())),
        )
        for p in props
    ]


def identities(
    conn: Conn,
    institution_id: str,
    role: str | None = None,
    limit: int = 100,
    after: bytes = b"",
) -> list[Key]:
    """An institution's keys (``role``: SERVICE, USER, DEVICE, OPERATOR, GOVERNANCE)."""
    if role is None:
        return fetch_all(
            conn,
            Key,
            KEY + "WHERE institution_id = %s AND key_id > %s ORDER BY role, key_id LIMIT %s",
            (institution_id, after, limit),
        )
    return fetch_all(
        conn,
        Key,
        KEY + "WHERE institution_id = %s AND role = %s AND key_id > %s ORDER BY key_id LIMIT %s",
        (institution_id, role, after, limit),
    )


def devices(conn: Conn, institution_id: str, limit: int = 100, after: bytes = b"") -> list[Key]:
    """An institution's device keys."""
    return identities(conn, institution_id, "DEVICE", limit, after)


def anchor(conn: Conn, data_id: str) -> Anchor | None:
    """One anchored data object."""
    rows = fetch_all(conn, Anchor, ANCHOR + "WHERE data_id = %s", (data_id,))
    return rows[0] if rows else None


def anchors(
    conn: Conn, institution_id: str, limit: int = 50, before: tuple[int, str] | None = None
) -> list[Anchor]:
    """An institution's anchors, newest first; ``before`` is the last (height, data_id)."""
    h, d = before if before is not None else (BIG, "")
    return fetch_all(
        conn,
        Anchor,
        ANCHOR + "WHERE institution_id = %s AND (height < %s OR "
        "(height = %s AND data_id > %s)) ORDER BY height DESC, data_id LIMIT %s",
        (institution_id, h, h, d, limit),
    )


def asset(conn: Conn, asset_id: str) -> Asset | None:
    """An asset with its ownership history (oldest first)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT asset_id, owner_key_id, metadata, registered_height FROM chain.assets "
            "WHERE asset_id = %s",
            (asset_id,),
        )
        row = cur.fetchone()
        if row is None:
            return None
        cur.execute(
            "SELECT height, position, tx_id, owner_key_id FROM chain.asset_owners "
            "WHERE asset_id = %s ORDER BY height, position",
            (asset_id,),
        )
        history = tuple(
            Ownership(height=h, position=p, tx_id=bytes(t), owner_key_id=bytes(o))
            for h, p, t, o in cur.fetchall()
        )
    return Asset(
        asset_id=row[0],
        owner_key_id=bytes(row[1]),
        metadata=row[2],
        registered_height=row[3],
        history=history,
    )


def assets_of(conn: Conn, owner_key_id: bytes, limit: int = 100, after: str = "") -> list[str]:
    """Ids of the assets a key owns."""
    rows = conn.execute(
        "SELECT asset_id FROM chain.assets WHERE owner_key_id = %s AND "
        "asset_id > %s ORDER BY asset_id LIMIT %s",
        (owner_key_id, after, limit),
    ).fetchall()
    return [r[0] for r in rows]


def l2_batches(conn: Conn, limit: int = 50, before_height: int | None = None) -> list[L2Batch]:
    """Layer-2 batches, newest first."""
    before = BIG if before_height is None else before_height
    return fetch_all(
        conn,
        L2Batch,
        "SELECT * FROM chain.l2_batches WHERE height < %s ORDER BY height DESC, batch_id LIMIT %s",
        (before, limit),
    )


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
