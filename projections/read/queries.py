"""Batched reads of the gateway's GraphQL resolvers and live view: many keys or heights in
one statement, certificate votes, throughput (static SQL, ``%s`` parameters).

Each query is served by an index of ``001_chain.sql``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from projections.read.model import BIG, KEY, TX, ChainSummary, Key, Transaction, limited
from runtime.pg import Conn


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateVote:
    """One operator signature of a block's quorum certificate."""

    position: int
    operator_key_id: bytes
    institution_id: str
    public_key: bytes
    signature: bytes


RECENT_BLOCKS = 20  # the dashboard's throughput window, in blocks


@dataclass(frozen=True, slots=True, kw_only=True)
class Throughput:
    """Transactions per second over the newest ``blocks`` blocks."""

    blocks: int
    transactions: int
    seconds: float

    @property
    def tps(self) -> float:
        return self.transactions / self.seconds if self.seconds > 0 else 0.0


def _b(value: Any) -> Any:
    return bytes(value) if isinstance(value, memoryview) else value


def key_by_id(conn: Conn, key_id: bytes) -> Key | None:
    """The identity (any role) with this key id."""
    return keys_by_ids(conn, [key_id]).get(key_id)


def keys_by_ids(conn: Conn, key_ids: list[bytes]) -> dict[bytes, Key]:
    """The identities with these key ids (absent ones are missing), in one statement."""
    rows = conn.execute((KEY + "WHERE key_id = ANY(%s)").encode(), (key_ids,)).fetchall()
    keys = [
        Key(
            key_id=_b(k),
            public_key=_b(pub),
            role=role,
            institution_id=inst,
            label=label,
            active=active,
            next_nonce=nonce,
        )
        for k, pub, role, inst, label, active, nonce in rows
    ]
    return {key.key_id: key for key in keys}


def certificate_votes(conn: Conn, height: int) -> list[CertificateVote]:
    """The signatures of block ``height``'s quorum certificate, in certificate order."""
    return certificate_votes_of(conn, [height]).get(height, [])


def certificate_votes_of(conn: Conn, heights: list[int]) -> dict[int, list[CertificateVote]]:
    """The certificate votes of several blocks (one statement), each in certificate order."""
    rows = conn.execute(
        b"SELECT height, position, operator_key_id, institution_id, public_key, signature "
        b"FROM chain.block_votes WHERE height = ANY(%s) ORDER BY height, position",
        (heights,),
    ).fetchall()
    out: dict[int, list[CertificateVote]] = {h: [] for h in heights}
    for h, p, o, i, k, s in rows:
        out[h].append(
            CertificateVote(
                position=p,
                operator_key_id=_b(o),
                institution_id=i,
                public_key=_b(k),
                signature=_b(s),
            )
        )
    return out


def transactions_of_blocks(
    conn: Conn, heights: list[int], limit: int, after_position: int
) -> dict[int, list[Transaction]]:
    """The same page (entries after ``after_position``, at most ``limit``) of several
    blocks in one statement; each block's page is served by the transactions primary key."""
    rows = _pages(
        conn,
        "bigint",
        heights,
        where="height = k.k AND position > %s ORDER BY position",
        order="t.height, t.position",
        params=(after_position, limit),
    )
    out: dict[int, list[Transaction]] = {h: [] for h in heights}
    for row in rows:
        tx = _tx(row)
        out[tx.height].append(tx)
    return out


def transactions_of_senders(
    conn: Conn, senders: list[bytes], limit: int, before: tuple[int, int] | None = None
) -> dict[bytes, list[Transaction]]:
    """:func:`projections.read.transactions_by_sender` of several senders, one statement."""
    h, p = before if before is not None else (BIG, 0)
    rows = _pages(
        conn,
        "bytea",
        senders,
        where="sender = k.k AND (height, position) < (%s, %s) ORDER BY height DESC, position DESC",
        order="t.sender, t.height DESC, t.position DESC",
        params=(h, p, limit),
    )
    out: dict[bytes, list[Transaction]] = {s: [] for s in senders}
    for row in rows:
        tx = _tx(row)
        assert tx.sender is not None
        out[tx.sender].append(tx)
    return out


def _pages(
    conn: Conn, key_type: str, keys: list[Any], *, where: str, order: str, params: tuple[Any, ...]
) -> list[tuple[Any, ...]]:
    """A page of ``chain.transactions`` per key: ``where`` (ending in its ORDER BY) is
    evaluated for each key ``k.k``; ``params`` fill its placeholders, then the LIMIT."""
    query = (
        "SELECT t.height, t.position, t.tx_id, t.tx_offset, t.result_code, t.sender, t.nonce, "
        f"t.operation FROM unnest(%s::{key_type}[]) AS k(k) CROSS JOIN LATERAL ("
        f"{TX}WHERE {where} LIMIT %s) t ORDER BY {order}"
    )
    return conn.execute(query.encode(), (keys, *params)).fetchall()


def assets_of_owners(conn: Conn, owners: list[bytes], limit: int) -> dict[bytes, list[str]]:
    """:func:`projections.read.assets_of` (first page) of several owners, one statement."""
    rows = conn.execute(
        b"SELECT o.k, a.asset_id FROM unnest(%s::bytea[]) AS o(k) CROSS JOIN LATERAL ("
        b"SELECT asset_id FROM chain.assets WHERE owner_key_id = o.k AND asset_id > '' "
        b"ORDER BY asset_id "
        b"LIMIT %s) a ORDER BY o.k, a.asset_id",
        (owners, limit),
    ).fetchall()
    out: dict[bytes, list[str]] = {o: [] for o in owners}
    for owner, asset_id in rows:
        out[_b(owner)].append(asset_id)
    return out


def latest_transactions(
    conn: Conn, limit: int, before: tuple[int, int] | None = None
) -> list[Transaction]:
    """Entries of final blocks, newest first; ``before`` is the last (height, position)."""
    h, p = before if before is not None else (BIG, 0)
    rows = conn.execute(
        limited(
            TX + "WHERE (height, position) < (%s, %s) ORDER BY height DESC, position DESC", limit
        ).encode(),
        (h, p),
    ).fetchall()
    return [_tx(r) for r in rows]


def _tx(row: tuple[Any, ...]) -> Transaction:
    height, position, tx_id, offset, code, sender, nonce, op = row
    return Transaction(
        height=height,
        position=position,
        tx_id=_b(tx_id),
        tx_offset=offset,
        result_code=code,
        sender=_b(sender),
        nonce=nonce,
        operation=op,
    )


def throughput(conn: Conn, blocks: int = RECENT_BLOCKS) -> Throughput:
    """Finalized transactions per second over the newest ``blocks`` blocks."""
    row = conn.execute(
        b"SELECT count(*), coalesce(sum(tx_count), 0), min(timestamp_ms), max(timestamp_ms) "
        b"FROM (SELECT tx_count, timestamp_ms FROM chain.blocks ORDER BY height DESC "
        b"LIMIT %s) newest",
        (blocks,),
    ).fetchone()
    if row is None:
        return throughput_of(None, 0, None, None)
    return throughput_of(*row)


def summary_with_counts(
    conn: Conn, blocks: int = RECENT_BLOCKS
) -> tuple[ChainSummary, int, Throughput] | None:
    """:func:`projections.read.summary`, :func:`institution_count` and :func:`throughput`
    in one statement (the dashboard's summary); None before the genesis is projected."""
    row = conn.execute(
        b"SELECT m.chain_id, m.height, m.last_hash, m.tx_count, m.ok_count, "
        b"(SELECT count(*) FROM chain.institutions WHERE status = 'ACTIVE'), "
        b"t.n, t.txs, t.first, t.last FROM chain.meta m, ("
        b"SELECT count(*) AS n, coalesce(sum(tx_count), 0) AS txs, min(timestamp_ms) AS first, "
        b"max(timestamp_ms) AS last FROM (SELECT tx_count, timestamp_ms FROM chain.blocks "
        b"ORDER BY height DESC LIMIT %s) newest) t",
        (blocks,),
    ).fetchone()
    if row is None:
        return None
    chain_id, height, last_hash, tx_count, ok_count, institutions, n, txs, first, last = row
    summary = ChainSummary(
        chain_id=chain_id,
        height=height,
        last_hash=_b(last_hash),
        tx_count=tx_count,
        ok_count=ok_count,
    )
    return summary, int(institutions), throughput_of(n, txs, first, last)


def throughput_of(n: int | None, txs: int, first: int | None, last: int | None) -> Throughput:
    """The rate of ``n`` blocks holding ``txs`` transactions stamped ``first`` to ``last`` ms
    (the aggregates :func:`throughput` reads; the gateway's SQL path reads them too)."""
    if not n or first is None or last is None:
        return Throughput(blocks=0, transactions=0, seconds=0.0)
    return Throughput(blocks=int(n), transactions=int(txs), seconds=(last - first) / 1000.0)


def institution_count(conn: Conn) -> int:
    """Institutions that are members now."""
    row = conn.execute(
        b"SELECT count(*) FROM chain.institutions WHERE status = 'ACTIVE'"
    ).fetchone()
    return int(row[0]) if row else 0


def chain_height(conn: Conn) -> int | None:
    """The projected (final) height, None before the genesis is projected."""
    row = conn.execute(b"SELECT height FROM chain.meta").fetchone()
    return None if row is None else int(row[0])


def envelopes_of(conn: Conn, entries: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The stored envelopes of several entries, by (height, position), in one statement
    (entries without one, TOO_LARGE, are missing)."""
    rows = conn.execute(
        b"SELECT t.height, t.position, t.envelope FROM chain.transactions t "
        b"JOIN unnest(%s::bigint[], %s::int[]) AS w(height, position) "
        b"ON t.height = w.height AND t.position = w.position WHERE t.envelope IS NOT NULL",
        ([h for h, _ in entries], [p for _, p in entries]),
    ).fetchall()
    return {(h, p): bytes(e) for h, p, e in rows}


def leaves_of(conn: Conn, heights: list[int]) -> dict[int, list[bytes]]:
    """The ``tx_root`` leaves (``tx_id || result code``) of several blocks, in entry order."""
    rows = conn.execute(
        b"SELECT height, tx_id, result_code FROM chain.transactions WHERE height = ANY(%s) "
        b"ORDER BY height, position",
        (heights,),
    ).fetchall()
    out: dict[int, list[bytes]] = {h: [] for h in heights}
    for h, tx_id, code in rows:
        out[h].append(bytes(tx_id) + bytes([code]))
    return out


def accepted_of_operations(
    conn: Conn, operations: list[str], after_height: int, limit: int
) -> list[Transaction]:
    """Accepted entries of the given operations above ``after_height``, oldest first: about
    ``limit`` of them, and every one of the last block listed (pages end on a block)."""
    where = TX + "WHERE operation = ANY(%s) AND result_code = 0 AND "
    rows = conn.execute(
        (where + "height > %s ORDER BY height, position LIMIT %s").encode(),
        (operations, after_height, limit),
    ).fetchall()
    found = [_tx(r) for r in rows]
    if len(found) == limit:
        last = found[-1]
        rest = conn.execute(
            (where + "height = %s AND position > %s ORDER BY position").encode(),
            (operations, last.height, last.position),
        ).fetchall()
        found += [_tx(r) for r in rest]
    return found


def registrations_of(conn: Conn, key_ids: list[bytes]) -> list[Transaction]:
    """Accepted ``RegisterIdentity`` and ``RotateKey`` entries of the blocks where one of
    ``key_ids`` first appeared, oldest first: candidates for the entry that registered it
    (the explorer decodes each envelope to tell which, D54)."""
    rows = conn.execute(
        (
            TX + "WHERE result_code = 0 AND operation = ANY(%s) AND height IN "
            "(SELECT min(height) FROM chain.key_activity WHERE key_id = ANY(%s) GROUP BY key_id) "
            "ORDER BY height, position"
        ).encode(),
        (["RegisterIdentity", "RotateKey"], key_ids),
    ).fetchall()
    return [_tx(r) for r in rows]
