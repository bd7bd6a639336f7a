"""Secrets never reach a command line: the spawn guard, the DSN split, Prometheus's flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra import procs
from infra.postgres_server import without_password
from infra.prometheus_server import LIFECYCLE_FLAG, Prometheus
from infra.settings import Settings


@pytest.mark.parametrize(
    "arg",
    [
        "host=127.0.0.1 user=pantheon password=hunter2 dbname=x",
        "host=127.0.0.1 PASSWORD = hunter2",
        "postgresql://pantheon:hunter2@127.0.0.1:5432/x",
        "PGPASSWORD=hunter2",
    ],
)
def test_spawn_refuses_a_password_in_argv(arg: str, tmp_path: Path) -> None:
    with pytest.raises(procs.SecretInArgv):
        procs.spawn(
            ["python3", "-c", "pass", arg],
            log_file=tmp_path / "log",
            pid_file=tmp_path / "pid",
        )
    assert not (tmp_path / "pid").exists()  # nothing was started


def test_ordinary_command_lines_pass() -> None:
    procs.check_argv(
        ["python", "-m", "projections.projector", "--dsn", "host=127.0.0.1 user=pantheon"]
    )
    procs.check_argv(["postgresql://pantheon@127.0.0.1/x", "--web.listen-address=127.0.0.1:1"])


def test_without_password_moves_it_to_the_environment() -> None:
    dsn, env = without_password("host=127.0.0.1 port=5 user=pantheon password=s3cr3t dbname=d")
    assert "s3cr3t" not in dsn and "password" not in dsn
    assert set(dsn.split()) == {"host=127.0.0.1", "port=5", "user=pantheon", "dbname=d"}
    assert env == {"PGPASSWORD": "s3cr3t"}
    plain, none = without_password("host=127.0.0.1 user=pantheon")
    assert none == {} and set(plain.split()) == {"host=127.0.0.1", "user=pantheon"}


def test_prometheus_starts_without_the_lifecycle_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[list[str]] = []

    def spawn(argv: list[str], **_kw: object) -> int:
        started.append(argv)
        raise RuntimeError("stop here")

    monkeypatch.setattr(procs, "spawn", spawn)
    monkeypatch.setattr("infra.prometheus_server.find_binary", lambda: "/usr/bin/prometheus")
    prom = Prometheus(Settings.from_env().with_changes(state_dir=tmp_path, prom_port=1))
    with pytest.raises(RuntimeError):
        prom.start()
    assert started and LIFECYCLE_FLAG not in started[0]
    assert not any("lifecycle" in arg for arg in started[0])
