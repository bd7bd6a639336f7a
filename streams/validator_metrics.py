"""Prometheus metrics of the validator process (names follow Prometheus conventions)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from ledger.results import ResultCode
from runtime.metrics_server import serve_metrics

_LABELS = ("institution", "operator")

CUT_HEIGHT = Gauge("pantheon_validator_cut_height", "Highest block cut and executed", _LABELS)
VOTED_HEIGHT = Gauge("pantheon_validator_voted_height", "Highest block voted on", _LABELS)
FINAL_HEIGHT = Gauge(
    "pantheon_validator_final_height", "Highest block final and published", _LABELS
)
VOTES = Counter("pantheon_validator_votes", "Votes signed and produced", _LABELS)
MARKERS = Counter("pantheon_validator_markers", "TimeToCut markers produced", _LABELS)
TXS = Counter(
    "pantheon_validator_transactions", "Final block entries by result code", (*_LABELS, "result")
)
FINALITY_LATENCY = Histogram(
    "pantheon_validator_finality_latency_seconds",
    "From the broker timestamp of a block's last message to its finality here",
    _LABELS,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
EQUIVOCATIONS = Counter(
    "pantheon_validator_equivocations", "Equivocations detected and reported", _LABELS
)
DIVERGENCES = Counter(
    "pantheon_validator_divergences",
    "Times this validator's hash differed from the final one",
    _LABELS,
)


def export_zeroes(labels: dict[str, str]) -> None:
    """Create every labelled series a panel or alert reads, at 0 (a fresh validator exports
    them before its first event): the event counters, and entries for each result code."""
    for counter in (DIVERGENCES, EQUIVOCATIONS, VOTES, MARKERS):
        counter.labels(**labels).inc(0)
    for code in ResultCode:
        TXS.labels(result=code.name, **labels).inc(0)
    FINALITY_LATENCY.labels(**labels)


def serve(port: int) -> bool:
    """Serve /metrics on 127.0.0.1:``port`` (False if the port is taken)."""
    return serve_metrics(port)
