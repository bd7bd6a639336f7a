"""Prometheus metrics of ``pantheon audit`` (served with ``--metrics-port``, e.g. with ``--every``).

Every series exists from the first run on (checks and outcomes are pre-labelled), so a
dashboard shows 0 rather than nothing while the ledger audits clean.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge

CHECKS = ("tx", "blocks", "votes", "receipts", "projection", "l2", "anchors", "log")
SEVERITIES = ("error", "warning", "info")
OUTCOMES = ("clean", "discrepancies", "failed")

DISCREPANCIES = Gauge(
    "pantheon_audit_discrepancies", "Errors found by the last audit run, by check", ["check"]
)
FINDINGS = Gauge(
    "pantheon_audit_findings", "Findings of the last audit run, by severity", ["severity"]
)
AUDITED_HEIGHT = Gauge("pantheon_audit_height", "Highest certified height the last run checked")
PROJECTED_HEIGHT = Gauge(
    "pantheon_audit_projection_height", "Projected height the last run compared", ["institution"]
)
LAST_RUN = Gauge("pantheon_audit_last_run_timestamp_seconds", "When the last audit run ended")
DURATION = Gauge("pantheon_audit_run_duration_seconds", "Wall time of the last audit run")
RATE = Gauge("pantheon_audit_transactions_per_second", "Replay rate of the last audit run")
TRANSACTIONS = Gauge(
    "pantheon_audit_transactions", "Entries replayed by the last run, by result", ["result"]
)
LOG_END = Gauge(
    "pantheon_audit_log_end_offset", "End offset of each ledger log at the last run", ["topic"]
)
RUNS = Counter("pantheon_audit_runs", "Audit runs by outcome", ["outcome"])

for _check in CHECKS:
    DISCREPANCIES.labels(_check)
for _severity in SEVERITIES:
    FINDINGS.labels(_severity)
for _outcome in OUTCOMES:
    RUNS.labels(_outcome)


def publish(
    *,
    errors_by_check: Mapping[str, int],
    by_severity: Mapping[str, int],
    audited_height: int,
    duration: float,
    rate: float,
    codes: Mapping[str, int],
    log_ends: Mapping[str, int],
    finished_at: float,
    outcome: str,
    projection: tuple[str, int] | None = None,
) -> None:
    """Set every gauge from one finished run."""
    for check in {*CHECKS, *errors_by_check}:
        DISCREPANCIES.labels(check).set(errors_by_check.get(check, 0))
    for severity in SEVERITIES:
        FINDINGS.labels(severity).set(by_severity.get(severity, 0))
    AUDITED_HEIGHT.set(audited_height)
    DURATION.set(duration)
    RATE.set(rate)
    for code, count in codes.items():
        TRANSACTIONS.labels(code).set(count)
    for topic, end in log_ends.items():
        LOG_END.labels(topic).set(end)
    if projection is not None:
        PROJECTED_HEIGHT.labels(projection[0]).set(projection[1])
    LAST_RUN.set(finished_at)
    RUNS.labels(outcome).inc()
