"""Reads the proofs and the validator-set source need: certified blocks, accepted
transactions, the validator set in force at a height."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from ledger.blocks import BlockHeader, EntryResult
from ledger.members import ValidatorSet, is_member
from ledger.results import ResultCode
from ledger.tx import TxRejected, parse_tx
from runtime.pg import Conn


@dataclass(frozen=True, slots=True)
class CertifiedBlock:
    """A final block as proofs need it: header, stored certificate, hash, entries in order."""

    header: BlockHeader
    certificate: bytes
    block_hash: bytes
    entries: list[EntryResult]


HEADER_COLUMNS = (
    "height, prev_hash, first_offset, last_offset, tx_root, state_root, validator_set_hash, "
    "timestamp_ms"
)
"""The columns of ``chain.blocks`` that are the header's fields, in :func:`header_of` order."""


def header_of(row: Sequence[Any]) -> BlockHeader:
    """The header stored in a ``chain.blocks`` row (its first columns: :data:`HEADER_COLUMNS`)."""
    return BlockHeader(
        height=int(row[0]),
        prev_hash=bytes(row[1]),
        first_offset=int(row[2]),
        last_offset=int(row[3]),
        tx_root=bytes(row[4]),
        state_root=bytes(row[5]),
        validator_set_hash=bytes(row[6]),
        timestamp_ms=int(row[7]),
    )


def certified_block(conn: Conn, height: int) -> CertifiedBlock | None:
    """The final block at ``height`` with its entries (for inclusion proofs)."""
    block = conn.execute(
        f"SELECT {HEADER_COLUMNS}, certificate, hash FROM chain.blocks WHERE height = %s",
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
    return CertifiedBlock(
        header=header_of(block),
        certificate=bytes(block[8]),
        block_hash=bytes(block[9]),
        entries=entries,
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
