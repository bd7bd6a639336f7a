"""The health of the local consortium's processes as ``pantheon status`` shows it: a
validator's from its status file, a gateway's from ``/healthz``, a projector's from the
height its database holds."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg

from infra import procs
from infra.errors import StackError
from projections import read
from runtime.cli_args import ConfigError

STALE_AFTER_MS = 5000


@dataclass(frozen=True, slots=True)
class ValidatorStatus:
    """One validator as ``pantheon status`` shows it."""

    name: str
    running: bool
    healthy: bool
    cut_height: int
    final_height: int
    detail: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def read_status(name: str, home: Path, now_ms: int) -> ValidatorStatus:
    """The status of the validator whose state directory is ``home``: running (its pid
    file names a live process), fresh (its status file was written in the last
    :data:`STALE_AFTER_MS`) and not diverged."""
    running = procs.read_pid(home / "pid") is not None
    try:
        doc = json.loads((home / "status.json").read_text())
    except (OSError, ValueError):
        doc = {}
    fresh = now_ms - int(doc.get("updated_ms", 0)) < STALE_AFTER_MS
    diverged = bool(doc.get("diverged"))
    healthy = running and fresh and not diverged
    detail = (
        "DIVERGED: stopped voting, see validator.log"
        if diverged
        else ("" if fresh or not running else "status not updated for 5s")
    )
    return ValidatorStatus(
        name=name,
        running=running,
        healthy=healthy,
        cut_height=int(doc.get("cut_height", 0)),
        final_height=int(doc.get("final_height", 0)),
        detail=detail or str(home / "validator.log"),
    )


def gateway_answers(url: str) -> bool:
    """Whether the gateway at ``url`` answers ``/healthz`` with 200 within two seconds."""
    with (
        contextlib.suppress(OSError, ValueError),
        urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp,
    ):
        return bool(resp.status == 200)
    return False


def projected_height(dsn: str) -> int | None:
    """The height the projection at ``dsn`` holds (0 before the genesis; None when its
    database cannot be read)."""
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            found = read.summary(conn)
        return found.height if found else 0
    except (psycopg.Error, ConfigError):
        return None


def wait_started(pid_file: Path, check: Callable[[], bool] | None, what: str) -> int:
    """Wait until the process of ``pid_file`` runs and ``check`` passes (a process with no
    health to ask gets a moment to crash at start); its pid, or StackError with its log's
    tail when it exited."""
    procs.wait_until(
        lambda: procs.read_pid(pid_file) is not None and (check is None or check()),
        timeout=60,
        what=f"{what} to be healthy",
    )
    if check is None:
        time.sleep(1.0)
    pid = procs.read_pid(pid_file)
    if pid is None:
        log = next(pid_file.parent.glob("*.log"), pid_file.parent / "missing.log")
        raise StackError(f"{what} exited; see {log}\n{procs.tail(log)}")
    return pid
