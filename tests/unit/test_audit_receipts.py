"""``ledger.audit_receipts``: the audit's check of the receipts log, driven directly."""

from __future__ import annotations

from ledger.audit_findings import ERROR, INFO, Findings
from ledger.audit_receipts import ReceiptAudit
from ledger.blocks import EntryResult, block_receipts, receipt
from ledger.execution import ExecutedBlock
from tests.unit.chain_helpers import Driver, consortium


def _replayed(blocks: int) -> tuple[ReceiptAudit, Findings, list[ExecutedBlock]]:
    driver = Driver(consortium(4))
    gov = driver.gov("inst-0")
    findings = Findings()
    audit = ReceiptAudit(findings, "receipts", 0)
    executed = []
    for h in range(1, blocks + 1):
        args = {"data_id": f"r-{h}", "sha256": bytes(32), "metadata": ""}
        block = driver.block([driver.tx(gov, "AnchorData", args)])
        raws = block_receipts(block.results, height=h, block_hash=block.block_hash)
        audit.replayed(h, block.block_hash, block.results, raws)
        executed.append(block)
    return audit, findings, executed


def test_identical_receipts_pass_and_a_missing_one_below_is_an_error() -> None:
    audit, findings, blocks = _replayed(3)
    for h in (2, 3):  # block 1's receipt never comes
        block = blocks[h - 1]
        raw = block_receipts(block.results, height=h, block_hash=block.block_hash)[0]
        audit.add(10 + h, raw, replayed_height=3, covered=block.results[-1].offset)
    assert findings.items == []
    audit.finish(audited_height=3)
    assert [(f.kind, f.height) for f in findings.items] == [("receipt.missing", 1)]


def test_a_malformed_receipt_is_an_error() -> None:
    audit, findings, _ = _replayed(1)
    audit.add(4, b"junk", replayed_height=1, covered=1)
    assert [(f.kind, f.severity, f.offset) for f in findings.items] == [
        ("receipt.malformed", ERROR, 4)
    ]


def test_a_receipt_beyond_the_replay_stays_pending() -> None:
    audit, findings, blocks = _replayed(1)
    unknown = EntryResult(tx_id=bytes(32), offset=500, code=blocks[0].results[0].code)
    far = receipt(unknown, height=9, block_hash=bytes(32))
    audit.add(5, far, replayed_height=1, covered=1)
    assert findings.items == []
    audit.finish(audited_height=1)
    assert [(f.kind, f.severity) for f in findings.items] == [("receipt.pending", INFO)]


def test_a_receipt_contradicting_its_tx_is_an_error_whatever_height_it_claims() -> None:
    audit, findings, blocks = _replayed(1)
    entry = blocks[0].results[0]
    forged = receipt(entry, height=99, block_hash=bytes(32))
    audit.add(6, forged, replayed_height=1, covered=entry.offset)
    [found] = findings.items
    assert found.kind == "receipt.mismatch" and "contradicts the outcome of its tx" in (
        found.message
    )
