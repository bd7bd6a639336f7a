"""Reads the gateway needs beyond :mod:`projections.read` (static SQL, ``%s`` parameters).

Each query is served by an index of ``001_chain.sql``; they belong in ``projections.read``
and can move there unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from projections.read import Conn, Key, Transaction

_KEY = "SELECT key_id, public_key, role, institution_id, label, active, next_nonce FROM chain.keys "
_TX = (
    "SELECT height, position, tx_id, tx_offset, result_code, sender, nonce, operation "
    "FROM chain.transactions "
)
_BIG = 2**62


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateVote:
    """One operator signature of a block's quorum certificate."""

    position: int
    operator_key_id: bytes
    institution_id: str
    public_key: bytes
    signature: bytes


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
    row = conn.execute((_KEY + "WHERE key_id = %s").encode(), (key_id,)).fetchone()
    if row is None:
        return None
    k, pub, role, inst, label, active, nonce = row
    return Key(
        key_id=_b(k),
        public_key=_b(pub),
        role=role,
        institution_id=inst,
        label=label,
        active=active,
        next_nonce=nonce,
    )


def certificate_votes(conn: Conn, height: int) -> list[CertificateVote]:
    """The signatures of block ``height``'s quorum certificate, in certificate order."""
    rows = conn.execute(
        b"SELECT position, operator_key_id, institution_id, public_key, signature "
        b"FROM chain.block_votes WHERE height = %s ORDER BY position",
        (height,),
    ).fetchall()
    return [
        CertificateVote(
            position=p, operator_key_id=_b(o), institution_id=i, public_key=_b(k), signature=_b(s)
        )
        for p, o, i, k, s in rows
    ]


def latest_transactions(
    conn: Conn, limit: int, before: tuple[int, int] | None = None
) -> list[Transaction]:
    """Entries of final blocks, newest first; ``before`` is the last (height, position)."""
    h, p = before if before is not None else (_BIG, 0)
    rows = conn.execute(
        (
            _TX + "WHERE (height, position) < (%s, %s) ORDER BY height DESC, position DESC LIMIT %s"
        ).encode(),
        (h, p, limit),
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


def throughput(conn: Conn, blocks: int = 20) -> Throughput:
    """Finalized transactions per second over the newest ``blocks`` blocks."""
    row = conn.execute(
        b"SELECT count(*), coalesce(sum(tx_count), 0), min(timestamp_ms), max(timestamp_ms) "
        b"FROM (SELECT tx_count, timestamp_ms FROM chain.blocks ORDER BY height DESC "
        b"LIMIT %s) newest",
        (blocks,),
    ).fetchone()
    if row is None or not row[0]:
        return Throughput(blocks=0, transactions=0, seconds=0.0)
    n, txs, first, last = row
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
