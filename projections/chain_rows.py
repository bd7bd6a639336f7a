"""The rows of one certified block, built by column name from the executed block (pure).

The chain projection writes them (:class:`~projections.chain.ChainProjection`) and the audit
computes the rows a projection must hold with the same functions
(:class:`~readers.audit_projection.ExpectedRows`), so no projection rule is written twice.
Nothing here decides anything about the ledger: the header, the certificate's votes, each
entry with the result code the core gave it, the asset owners it sets, and the write set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ledger.cutter import CutBlock
from ledger.execution import ExecutedBlock
from ledger.finality import QuorumCertificate
from ledger.hashing import canonical_bytes
from ledger.results import ResultCode
from ledger.state import Record
from ledger.tx import parse_tx
from projections.rows import BatchRows, check_owners

UNAUTHENTICATED = frozenset({ResultCode.MALFORMED, ResultCode.TOO_LARGE, ResultCode.BAD_SIGNATURE})
"""Result codes of entries whose sender, nonce and operation are not stored (not signed)."""


def block_rows(
    rows: BatchRows,
    executed: ExecutedBlock,
    cut: CutBlock,
    cert: QuorumCertificate,
    source_offset: int,
    *,
    previous: Callable[[str], Record | None],
) -> None:
    """Every row of one certified block (:func:`header_rows` and :func:`entry_rows`)."""
    header_rows(rows, executed, cert, source_offset)
    entry_rows(rows, executed, cut, previous)


def header_rows(
    rows: BatchRows, executed: ExecutedBlock, cert: QuorumCertificate, source_offset: int
) -> None:
    """The block's row and its certificate's votes."""
    header, height = executed.header, executed.header.height
    ok = sum(1 for r in executed.results if r.code is ResultCode.OK)
    certificate = canonical_bytes("QuorumCertificate", cert.record())
    block = {
        "height": height,
        "hash": executed.block_hash,
        "prev_hash": header.prev_hash,
        "first_offset": header.first_offset,
        "last_offset": header.last_offset,
        "tx_root": header.tx_root,
        "state_root": header.state_root,
        "validator_set_hash": header.validator_set_hash,
        "timestamp_ms": header.timestamp_ms,
        "tx_count": len(executed.results),
        "ok_count": ok,
        "certificate": certificate,
        "source_offset": source_offset,
    }
    rows.add_named("blocks", [block])
    rows.add_named(
        "block_votes",
        (
            {
                "height": height,
                "position": i,
                "operator_key_id": v.operator_key_id,
                "institution_id": executed.validator_set.institution_of(v.operator_key_id),
                "public_key": v.public_key,
                "signature": v.signature,
            }
            for i, v in enumerate(cert.votes)
        ),
    )


def entry_rows(
    rows: BatchRows,
    executed: ExecutedBlock,
    cut: CutBlock,
    previous: Callable[[str], Record | None],
) -> None:
    """The block's entries, asset owners and write set; ``previous(key)`` is the record
    before the block (call it before the block is committed)."""
    height = executed.header.height
    entries: list[dict[str, Any]] = []
    owners: dict[str, bytes] = {}
    owner_rows: list[dict[str, Any]] = []
    parsed = executed.transactions or (None,) * len(cut.entries)
    for position, (entry, result) in enumerate(zip(cut.entries, executed.results, strict=True)):
        sender = nonce = operation = None
        if result.code not in UNAUTHENTICATED:
            tx = parsed[position] or parse_tx(entry.raw, signature_verified=True)
            sender, nonce, operation, args = tx.sender, tx.nonce, tx.operation, tx.args
            if result.code is ResultCode.OK and operation in ("RegisterAsset", "TransferAsset"):
                owner = sender if operation == "RegisterAsset" else args["new_owner_key_id"]
                owners[args["asset_id"]] = owner
                owner_rows.append(
                    {
                        "asset_id": args["asset_id"],
                        "height": height,
                        "position": position,
                        "tx_id": result.tx_id,
                        "owner_key_id": owner,
                    }
                )
        envelope = None if result.code is ResultCode.TOO_LARGE else entry.raw
        entries.append(
            {
                "height": height,
                "position": position,
                "tx_id": result.tx_id,
                "tx_offset": result.offset,
                "result_code": int(result.code),
                "sender": sender,
                "nonce": nonce,
                "operation": operation,
                "envelope": envelope,
            }
        )
    check_owners(executed.writes, owners)
    rows.add_named("transactions", entries)
    rows.add_named("asset_owners", owner_rows)
    rows.add_writes(executed.writes, height, previous)
