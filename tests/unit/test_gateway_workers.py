"""The worker supervisor of ``pantheon gateway --workers`` (gateway/workers.py, D46), with
workers that only record what happens to them (the real gateway in two workers:
tests/faults/test_gateway_workers.py). Each case runs the supervisor in its own process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.workers import Supervisor

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 30.0  # generous: the machine is shared

SCRIPT = """
import os, signal, sys, time
from pathlib import Path
from gateway.workers import Supervisor

out, mode = Path(sys.argv[1]), sys.argv[2]

def run(index, ready):
    if mode == "fail-at-start" and index == 0:
        return 2
    (out / f"worker-{index}").write_text(str(os.getpid()))
    ready()
    if mode == "crash" and index == 1:
        time.sleep(0.3)
        return 3
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while not stop:
        time.sleep(0.02)
    (out / f"stopped-{index}").write_text("")
    return 0

sys.exit(Supervisor(2, run, stop_timeout_s=10).serve())
"""


def _start(tmp_path: Path, mode: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path), mode],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _wait_for(*paths: Path) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not all(p.exists() for p in paths):
        assert time.monotonic() < deadline, [p.name for p in paths if not p.exists()]
        time.sleep(0.05)


def test_sigterm_to_the_parent_stops_every_worker(tmp_path: Path) -> None:
    proc = _start(tmp_path, "serve")
    try:
        _wait_for(tmp_path / "worker-0", tmp_path / "worker-1")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE_S) == 0
        assert (tmp_path / "stopped-0").exists() and (tmp_path / "stopped-1").exists()
    finally:
        proc.kill()


def test_sigkill_of_the_parent_leaves_no_worker_running(tmp_path: Path) -> None:
    proc = _start(tmp_path, "serve")
    try:
        _wait_for(tmp_path / "worker-0", tmp_path / "worker-1")
        proc.kill()  # no handler runs: the kernel tells the workers (PR_SET_PDEATHSIG)
        proc.wait(DEADLINE_S)
        _wait_for(tmp_path / "stopped-0", tmp_path / "stopped-1")
    finally:
        proc.kill()


def test_a_worker_that_exits_stops_the_gateway(tmp_path: Path) -> None:
    proc = _start(tmp_path, "crash")
    try:
        assert proc.wait(DEADLINE_S) == 1  # worker 1 exited on its own
        assert (tmp_path / "stopped-0").exists()  # worker 0 was told to stop
    finally:
        proc.kill()


def test_worker_zero_failing_at_start_forks_no_other(tmp_path: Path) -> None:
    proc = _start(tmp_path, "fail-at-start")
    try:
        assert proc.wait(DEADLINE_S) == 2  # its exit code (2: bad configuration)
        assert not (tmp_path / "worker-1").exists()
    finally:
        proc.kill()


def test_a_supervisor_needs_a_worker() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Supervisor(0, lambda _index, _ready: 0)
