"""The audit's human report (:mod:`readers.audit_report`)."""

from __future__ import annotations

from ledger.audit_findings import Finding
from readers.audit_report import AuditReport, render


def test_report_gives_the_verdict_first_and_groups_notices() -> None:
    def finding(kind: str, severity: str, message: str, offset: int) -> Finding:
        return Finding(
            check="chk", kind=kind, severity=severity, message=message, topic="t", offset=offset
        )

    report = AuditReport(chain_id="c", genesis_hash=bytes(32), prefix="pantheon.", started_at=0.0)
    report.findings = [
        finding("row.differs", "error", "one row differs", 7),
        finding("row.differs", "error", "one row differs", 7),  # the same error twice
        finding("log.gap", "warning", "a gap", 9),
        *(finding("anchor.no_object", "info", f"anchor {i} has no object", i) for i in range(50)),
        finding("l2.not_checked", "info", "no Layer-2 store", 1),
    ]
    report.dropped = {"anchor.no_object": 150}
    text = render(report)
    lines = text.splitlines()
    assert lines[0].startswith("RESULT: 2 DISCREPANCIES (2 error(s), 1 warning(s), 201 notice(s)")
    assert text.count("one row differs") == 1 and "(x2)" in text
    assert "a gap" in text
    assert "anchor 3 has no object" not in text  # grouped: only the first of the kind
    stripped = [line.strip() for line in lines]
    assert "200  [chk] anchor.no_object: anchor 0 has no object (and the like)" in stripped
    assert "1  [chk] l2.not_checked: no Layer-2 store" in stripped
    verbose = render(report, verbose=True)
    assert "anchor 3 has no object" in verbose
    assert "... and 150 more anchor.no_object finding(s)" in verbose
    report.findings = report.findings[3:]
    assert render(report).startswith("RESULT: CLEAN (0 error(s), 0 warning(s), 201 notice(s)")
