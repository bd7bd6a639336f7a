"""Every labelled series a panel or alert reads exists, at 0, in a freshly started process.

A Grafana panel over a labelled counter shows nothing (not 0) and an alert on it cannot fire
until its first event creates the series; `pantheon_projection_skipped` was one (D49).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

from harness.projections_support import SimChain, projector_argv
from infra import procs
from infra.postgres_server import Postgres
from projections.chain import COUNTER_REASONS


def _scrape(port: int, proc: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                text: str = r.read().decode()
            if "pantheon_projection_skipped" in text:
                return text
        except OSError:
            pass
        assert time.monotonic() < deadline, "the projector served no metrics"
        time.sleep(0.2)


def test_fresh_projector_exports_every_skip_reason_at_zero(
    bootstrap: str, postgres: Postgres, tmp_path: Path
) -> None:
    sim = SimChain(bootstrap, f"m{uuid.uuid4().hex[:8]}.", tmp_path)
    server, secret_env = postgres.child_dsn("postgres")
    port = procs.free_port()
    log = tmp_path / "projector.log"
    dbname = f"m_{uuid.uuid4().hex[:10]}"
    metrics = ("--metrics-port", str(port))
    argv = projector_argv(sim.genesis_path, bootstrap, sim.prefix, server, dbname, *metrics)
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, env={**os.environ, **secret_env})
    try:
        text = _scrape(port, proc, log)  # no block was ever published on these topics
    finally:
        proc.terminate()
        proc.wait(30)
        sim.close()
    series = r'^pantheon_projection_skipped\{institution="inst-1",reason="(\w+)"\} (\S+)$'
    found = dict(re.findall(series, text, re.M))
    assert set(found) == set(COUNTER_REASONS)
    assert all(float(v) == 0 for v in found.values()), found


def test_every_reason_the_projection_counts_is_exported() -> None:
    """A reason added to the projection's counters without COUNTER_REASONS would again be
    exported only after its first event."""
    projections = Path(__file__).resolve().parents[2] / "projections"
    source = "".join(p.read_text() for p in sorted(projections.glob("chain*.py")))
    counted = set(re.findall(r'counters\["(\w+)"\]', source))
    assert counted and counted == set(COUNTER_REASONS)
