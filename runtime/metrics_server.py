"""The /metrics endpoint every Pantheon process serves on loopback."""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

log = logging.getLogger(__name__)


def serve_metrics(port: int) -> bool:
    """Serve Prometheus metrics on 127.0.0.1:``port``; False (and an error log) if the port
    cannot be bound: the process keeps doing its real work without metrics."""
    try:
        start_http_server(port, addr="127.0.0.1")
    except OSError as exc:
        log.error("cannot serve /metrics", extra={"port": port, "error": str(exc)})
        return False
    return True
