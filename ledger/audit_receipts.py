"""The audit's check of the ``receipts`` log (pure; part of :class:`ledger.audit.ChainAudit`).

Receipts must be byte-identical to the receipt of the replayed entry at their offset; every
entry of a certified height below the newest receipt height must have one. A receipt that is
not is checked against the replayed outcome of its tx, whatever height it claims (a forged
receipt naming a far height is an error as soon as its tx or its offset has been replayed);
only a receipt whose tx and offset both lie beyond the replay stays pending (info), and so
does a later ``BAD_NONCE`` receipt of a replayed tx id (a replayed envelope).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledger.audit_findings import ERROR, INFO, Findings, show
from ledger.blocks import EntryResult
from ledger.results import ResultCode
from schemas.codec import decode
from schemas.errors import CodecError


class ReceiptAudit:
    """The replayed entries and the receipts seen for them."""

    def __init__(self, findings: Findings, topic: str, start_height: int) -> None:
        self.findings = findings
        self.topic = topic
        self.start_height = start_height
        self._bytes: dict[bytes, int] = {}  # expected receipt -> its entry's tx offset
        self._entries: dict[int, tuple[int, EntryResult, bytes]] = {}
        self._receipted: set[int] = set()
        self._top = 0
        self._pending = 0
        self._first_offset: dict[bytes, int] = {}  # tx id -> offset of its first entry

    def replayed(
        self, height: int, block_hash: bytes, results: Sequence[EntryResult], receipts: list[bytes]
    ) -> None:
        """The entries of replayed block ``height`` and their expected receipt bytes."""
        for result, raw in zip(results, receipts, strict=True):
            self._bytes[raw] = result.offset
            self._entries[result.offset] = (height, result, block_hash)
            self._first_offset.setdefault(result.tx_id, result.offset)

    def add(self, offset: int, raw: bytes, *, replayed_height: int, covered: int) -> None:
        """A ``receipts`` message, after the tx log was replayed to ``replayed_height`` (its
        blocks hold the tx offsets up to ``covered``)."""
        entry_offset = self._bytes.get(raw)
        if entry_offset is not None:
            self._receipted.add(entry_offset)
            self._top = max(self._top, self._entries[entry_offset][0])
            return
        try:
            _, record = decode(raw, "Receipt")
        except CodecError as exc:
            self.findings.report(
                "receipts",
                "receipt.malformed",
                ERROR,
                f"receipts message at offset {offset} is not a Receipt: {exc}",
                topic=self.topic,
                offset=offset,
            )
            return
        height = record["height"]
        if height <= self.start_height:
            return
        found = self._entries.get(record["offset"])
        first = self._first_offset.get(record["tx_id"])
        if found is None and first is not None:
            found = self._entries.get(first)  # the outcome of its tx, at another offset
        beyond = height > replayed_height and record["offset"] > covered
        if beyond and (first is None or record["result_code"] == int(ResultCode.BAD_NONCE)):
            self._pending += 1  # a tx (or a replay of one) the replay has not reached
            return
        if height <= replayed_height:
            self._top = max(self._top, height)
        self._mismatch(offset, record, found)

    def _mismatch(
        self, offset: int, record: dict[str, Any], found: tuple[int, EntryResult, bytes] | None
    ) -> None:
        height = record["height"]
        details: dict[str, Any] = {"receipt": {k: show(v) for k, v in record.items()}}
        what = "contradicts the replayed entry"
        if found is not None:
            h, result, block_hash = found
            details["replayed"] = {
                "tx_id": show(result.tx_id),
                "height": h,
                "offset": result.offset,
                "result_code": int(result.code),
                "block_hash": show(block_hash),
            }
            if result.tx_id == record["tx_id"]:
                what = f"contradicts the outcome of its tx (block {h}, {result.code.name})"
        else:
            what = "names no replayed entry (no block holds its tx at that offset)"
        self.findings.report(
            "receipts",
            "receipt.mismatch",
            ERROR,
            f"receipt at offset {offset} (tx offset {record['offset']}, height {height}) {what}",
            topic=self.topic,
            offset=offset,
            height=height,
            details=details,
        )

    def finish(self, audited_height: int) -> None:
        """Missing receipts below the newest receipted height, and the pending count."""
        top = min(self._top - 1, audited_height)
        for offset, (height, result, _) in self._entries.items():
            if height <= top and offset not in self._receipted:
                self.findings.report(
                    "receipts",
                    "receipt.missing",
                    ERROR,
                    f"entry at tx offset {offset} of block {height} has no receipt",
                    height=height,
                    topic=self.topic,
                    details={"tx_id": result.tx_id, "tx_offset": offset},
                )
        if self._pending:
            self.findings.report(
                "receipts",
                "receipt.pending",
                INFO,
                f"{self._pending} receipt(s) for heights above the replay",
            )
