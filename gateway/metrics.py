"""Prometheus metrics of one gateway app (its own registry, so apps never collide).

With several worker processes (:mod:`gateway.workers`, ``PROMETHEUS_MULTIPROC_DIR`` set) each
worker counts into the shared files and :meth:`GatewayMetrics.render` sums the workers'
``pantheon_gateway_*`` series (counters and histograms add up; the subscriptions gauge is the
live workers' sum, the height their maximum), so dashboards and alerts see one gateway.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["CONTENT_TYPE_LATEST", "GatewayMetrics"]

LIMIT_CODES = (
    "QUERY_TOO_DEEP",
    "QUERY_TOO_COSTLY",
    "PAGE_SIZE_EXCEEDED",
    "TOO_MANY_ALIASES",
    "BODY_TOO_LARGE",
    "REQUEST_TIMEOUT",
)
"""The refusals ``pantheon_gateway_limited_total`` counts by code (gateway/errors.py)."""

AUTH_REASONS = ("malformed", "bad_signature", "expired", "revoked")
"""Token refusals (gateway/auth/tokens.py) whose ``pantheon_gateway_auth_failures_total``
series exist from the start."""


class GatewayMetrics:
    """Request latency, outcomes, auth failures, limit refusals, live subscribers."""

    def __init__(self, institution: str) -> None:
        self.registry = CollectorRegistry()
        labels = {"institution": institution}
        self.latency = Histogram(
            "pantheon_gateway_request_seconds",
            "GraphQL request latency",
            ["institution", "operation"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.requests = Counter(
            "pantheon_gateway_requests",
            "GraphQL requests by operation type and outcome",
            ["institution", "operation", "outcome"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "pantheon_gateway_auth_failures",
            "Refused tokens and missing permissions, by reason",
            ["institution", "reason"],
            registry=self.registry,
        )
        self.limited = Counter(
            "pantheon_gateway_limited",
            "Queries refused by a limit, by error code",
            ["institution", "code"],
            registry=self.registry,
        )
        self.cache_hits = Counter(
            "pantheon_gateway_cache_hits",
            "Query responses served from the per-height cache",
            ["institution"],
            registry=self.registry,
        ).labels(**labels)
        self.subscribers = Gauge(
            "pantheon_gateway_subscriptions",
            "Active GraphQL subscriptions",
            ["institution"],
            registry=self.registry,
            multiprocess_mode="livesum",
        ).labels(**labels)
        self.height = Gauge(
            "pantheon_gateway_height",
            "Final height the gateway sees in its projection",
            ["institution"],
            registry=self.registry,
            multiprocess_mode="livemax",
        ).labels(**labels)
        self.object_integrity = Counter(
            "pantheon_gateway_object_integrity_failures",
            "Stored objects refused because a row or chunk is not what the gateway stored "
            "(what: metadata, grant, anchor, chunks, chunk, content)",
            ["institution", "what"],
            registry=self.registry,
        )
        self.institution = institution
        # the labelled series a request updates, looked up once (``labels`` takes a lock
        # and builds a key on every call)
        self._requests: dict[tuple[str, str], Any] = {}
        self._latency: dict[str, Any] = {}
        for code in LIMIT_CODES:  # exported at 0 from the start: panels show 0, not nothing
            self.limited.labels(institution, code)
        for reason in AUTH_REASONS:
            self.auth_failures.labels(institution, reason)
        for kind in ("query", "mutation"):
            self.latency.labels(institution, kind)
            for outcome in ("ok", "error"):
                self.requests.labels(institution, kind, outcome)

    def finished(self, kind: str, outcome: str, seconds: float) -> None:
        """Count one GraphQL request of ``kind`` with ``outcome`` that took ``seconds``."""
        counter = self._requests.get((kind, outcome))
        if counter is None:
            counter = self.requests.labels(self.institution, kind, outcome)
            self._requests[kind, outcome] = counter
        histogram = self._latency.get(kind)
        if histogram is None:
            histogram = self._latency[kind] = self.latency.labels(self.institution, kind)
        counter.inc()
        histogram.observe(seconds)

    def render(self) -> bytes:
        """The text exposition: this process's registry, or every worker's sum."""
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not directory:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        registry.register(_GatewaySeries(MultiProcessCollector(None, directory)))  # type: ignore[no-untyped-call]
        return generate_latest(registry)


class _GatewaySeries:
    """The gateway's own series of a multiprocess collection (worker 0 may also run the IAM
    projection, whose metrics are not the gateway's)."""

    def __init__(self, inner: MultiProcessCollector) -> None:
        self.inner = inner

    def collect(self) -> Iterable[Metric]:
        series = self.inner.collect()  # type: ignore[no-untyped-call]
        return [m for m in series if m.name.startswith("pantheon_gateway_")]
