"""What an audit run found (:class:`AuditReport`) and its human and JSON reports."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.audit_findings import ERROR, INFO, WARNING, Finding, show


@dataclass(slots=True)
class AuditReport:
    """What a run found; :meth:`as_dict` is the JSON report."""

    chain_id: str
    genesis_hash: bytes
    prefix: str
    started_at: float
    duration: float = 0.0
    replay_seconds: float = 0.0
    log_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    replayed_height: int = 0
    audited_height: int = 0
    checkpoint_height: int = 0
    transactions: int = 0
    signature_workers: int = 0
    signature_wait: float = 0.0  # seconds the replay waited for the signature workers
    codes: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    membership: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    projection: dict[str, Any] | None = None
    at_height: dict[str, Any] | None = None

    def severity_counts(self) -> dict[str, int]:
        """Findings per severity (capped kinds counted in full)."""
        counts = Counter(f.severity for f in self.findings)
        sev = {f.kind: f.severity for f in self.findings}
        for kind, extra in self.dropped.items():
            counts[sev[kind]] += extra
        return {s: counts.get(s, 0) for s in (ERROR, WARNING, INFO)}

    @property
    def clean(self) -> bool:
        return self.severity_counts()[ERROR] == 0

    @property
    def tx_rate(self) -> float:
        return self.transactions / self.replay_seconds if self.replay_seconds > 0 else 0.0

    def errors_by_check(self) -> dict[str, int]:
        """Errors per check (for metrics)."""
        return dict(Counter(f.check for f in self.findings if f.severity == ERROR))

    def as_dict(self) -> dict[str, Any]:
        return {
            "result": "clean" if self.clean else "discrepancies",
            "chain_id": self.chain_id,
            "genesis_hash": self.genesis_hash.hex(),
            "prefix": self.prefix,
            "started_at": self.started_at,
            "duration_seconds": round(self.duration, 3),
            "transactions_per_second": round(self.tx_rate, 1),
            "logs": {t: {"from": a, "to": b} for t, (a, b) in self.log_ranges.items()},
            "replayed_height": self.replayed_height,
            "audited_height": self.audited_height,
            "checkpoint_height": self.checkpoint_height,
            "transactions": self.transactions,
            "signature_workers": self.signature_workers,
            "signature_wait_seconds": round(self.signature_wait, 3),
            "result_codes": self.codes,
            "counts": self.counts,
            "membership": self.membership,
            "summary": self.severity_counts(),
            "findings": [f.as_dict() for f in self.findings],
            "findings_not_listed": self.dropped,
            "projection": self.projection,
            "at_height": self.at_height,
        }


def render(report: AuditReport, *, verbose: bool = False) -> str:
    """The human report: the verdict and counts first, then each error and warning once,
    the notices grouped by kind with counts (``verbose``: each listed), then the details."""
    counts = report.severity_counts()
    verdict = "RESULT: CLEAN" if report.clean else f"RESULT: {counts[ERROR]} DISCREPANCIES"
    lines = [
        f"{verdict} ({counts[ERROR]} error(s), {counts[WARNING]} warning(s), "
        f"{counts[INFO]} notice(s); chain {report.chain_id!r} certified and verified up to "
        f"height {report.audited_height})"
    ]
    for severity, title in ((ERROR, "errors"), (WARNING, "warnings")):
        found = [f for f in report.findings if f.severity == severity]
        if found:
            lines.append(f"  {title}:")
            lines += _finding_lines(found)
    notices = [f for f in report.findings if f.severity == INFO]
    if notices and verbose:
        lines.append("  notices:")
        lines += _finding_lines(notices)
    elif notices:
        lines.append("  notices, by kind (--verbose lists them):")
        lines += _notice_counts(notices, report.dropped)
    listed = {f.kind for f in notices} if not verbose else set()
    for kind, extra in report.dropped.items():
        if kind not in listed:
            lines.append(f"    ... and {extra} more {kind} finding(s) (see the counts)")
    lines.append(
        f"Pantheon audit of chain {report.chain_id!r} (genesis "
        f"{report.genesis_hash.hex()[:16]}..., topics {report.prefix}*)"
    )
    ranges = ", ".join(
        f"{t.removeprefix(report.prefix)} {a}..{b}" for t, (a, b) in report.log_ranges.items()
    )
    lines.append(f"  logs read: {ranges}")
    codes = ", ".join(f"{c} {n:,}" for c, n in sorted(report.codes.items())) or "none"
    workers = (
        f", signatures verified by {report.signature_workers} worker processes"
        if report.signature_workers
        else ""
    )
    lines.append(
        f"  replayed {report.replayed_height} block(s) from height "
        f"{report.checkpoint_height}, {report.transactions:,} entries ({codes}) in "
        f"{report.replay_seconds:.2f}s ({report.tx_rate:,.0f} tx/s{workers})"
    )
    lines.append(f"  certified and verified up to height {report.audited_height}")
    for m in report.membership:
        lines.append(
            f"  validators from height {m['height']}: {', '.join(m['members'])} "
            f"(quorum {m['quorum']})"
        )
    if report.projection is not None:
        p = report.projection
        lines.append(f"  projection of {p['institution']} at height {p['projected_height']}:")
        lines.append(f"    {'table':<16}{'expected':>10}{'actual':>10}  digest")
        for t in p["tables"]:
            status = "ok" if t["equal"] else f"DIFFERS (expected {t['expected_digest'][:12]})"
            lines.append(
                f"    {t['table']:<16}{t['expected_rows']:>10,}{t['actual_rows']:>10,}"
                f"  {t['actual_digest'][:12]} {status}"
            )
        if "iam" in p and not p["iam"].get("skipped"):
            i = p["iam"]
            lines.append(
                f"  IAM of {p['institution']} to offset {i['position']}: {i['accepted']} "
                f"events applied, refused {i['refused'] or 'none'}, "
                f"{i['row_findings']} row finding(s)"
            )
    if report.at_height is not None:
        a = report.at_height
        lines.append(
            f"  state at height {a['height']}: block {a['block_hash'][:16]}..., "
            f"state root {a['state_root'][:16]}..., certified: {a['certified']}"
        )
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(a["records_by_kind"].items()))
        lines.append(f"    records: {kinds}")
        if "validators" in a:
            v = a["validators"]
            lines.append(f"    validators: {', '.join(v['members'])} (quorum {v['quorum']})")
    return "\n".join(lines)


def _where(f: Finding) -> str:
    pairs = (("topic", f.topic), ("offset", f.offset), ("height", f.height))
    return " ".join(f"{k}={v}" for k, v in pairs if v is not None)


def _finding_lines(findings: Sequence[Finding]) -> list[str]:
    """Findings, each distinct one once (a repeat is counted, not printed again)."""
    times: Counter[tuple[str, str, str, str]] = Counter()
    distinct: list[Finding] = []
    for f in findings:
        same = (f.check, f.kind, f.message, _where(f))
        if not times[same]:
            distinct.append(f)
        times[same] += 1
    lines = []
    for f in distinct:
        where = _where(f)
        n = times[(f.check, f.kind, f.message, where)]
        text = f"    {f.severity.upper():<7} [{f.check}] {f.kind}: {f.message}"
        lines.append(text + (f"  ({where})" if where else "") + (f"  (x{n})" if n > 1 else ""))
        for name, value in f.details.items():
            lines.append(f"             {name}: {json.dumps(show(value), default=str)}")
    return lines


def _notice_counts(notices: Sequence[Finding], dropped: dict[str, int]) -> list[str]:
    """One line per kind of notice: how many (those not listed included), and the first."""
    by_kind = Counter(f.kind for f in notices)
    for kind in by_kind:
        by_kind[kind] += dropped.get(kind, 0)
    first: dict[str, Finding] = {}
    for f in notices:
        first.setdefault(f.kind, f)
    return [
        f"    {n:>6}  [{first[kind].check}] {kind}: {first[kind].message}"
        + (" (and the like)" if n > 1 else "")
        for kind, n in by_kind.most_common()
    ]


def write_json(report: AuditReport, path: str) -> None:
    """The JSON report to ``path`` (``-``: stdout)."""
    text = json.dumps(report.as_dict(), indent=2, default=str)
    if path == "-":
        print(text)
    else:
        Path(path).write_text(text + "\n")
