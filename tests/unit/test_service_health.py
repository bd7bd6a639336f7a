"""``infra.service_health``: a local validator's status as ``pantheon status`` reports it."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from infra.service_health import STALE_AFTER_MS, read_status, wait_started

NOW_MS = 1_700_000_000_000


def validator_home(tmp_path: Path, *, alive: bool, status: Mapping[str, object] | None) -> Path:
    if alive:
        (tmp_path / "pid").write_text(str(os.getpid()))
    if status is not None:
        (tmp_path / "status.json").write_text(json.dumps(status))
    return tmp_path


def test_a_running_validator_with_a_fresh_status_is_healthy(tmp_path: Path) -> None:
    status = {"updated_ms": NOW_MS - 100, "cut_height": 7, "final_height": 5}
    found = read_status("alpha-0", validator_home(tmp_path, alive=True, status=status), NOW_MS)
    assert (found.running, found.healthy) == (True, True)
    assert (found.cut_height, found.final_height) == (7, 5)
    assert found.detail == str(tmp_path / "validator.log")


def test_a_stale_status_is_unhealthy_and_says_so(tmp_path: Path) -> None:
    status = {"updated_ms": NOW_MS - STALE_AFTER_MS, "cut_height": 7}
    found = read_status("alpha-0", validator_home(tmp_path, alive=True, status=status), NOW_MS)
    assert not found.healthy
    assert found.detail == "status not updated for 5s"


def test_a_diverged_validator_is_unhealthy_even_when_fresh(tmp_path: Path) -> None:
    status = {"updated_ms": NOW_MS, "diverged": True}
    found = read_status("beta-1", validator_home(tmp_path, alive=True, status=status), NOW_MS)
    assert not found.healthy
    assert found.detail.startswith("DIVERGED")


def test_a_stopped_validator_without_a_status_file_reads_as_zero(tmp_path: Path) -> None:
    found = read_status("beta-1", validator_home(tmp_path, alive=False, status=None), NOW_MS)
    assert found.as_dict() == {
        "name": "beta-1",
        "running": False,
        "healthy": False,
        "cut_height": 0,
        "final_height": 0,
        "detail": str(tmp_path / "validator.log"),
    }


def test_wait_started_waits_for_the_check_and_returns_the_pid(tmp_path: Path) -> None:
    (tmp_path / "pid").write_text(str(os.getpid()))
    answers = iter([False, False, True])
    assert wait_started(tmp_path / "pid", lambda: next(answers), "the projector") == os.getpid()
    assert next(answers, None) is None  # asked until it passed, not after
