"""The stack commands: start twice, stop twice, status, and clear errors for taken ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest

from harness.stack_fixtures import (
    command_lines_carrying,
    private_settings,
    removed_afterwards,
    stack_secrets,
)
from infra import procs
from infra.cli import main
from infra.errors import PortTakenError
from infra.prometheus_server import Prometheus
from infra.settings import Settings
from infra.stack import Stack

pytestmark = pytest.mark.integration


def _pids(stack: Stack) -> dict[str, int | None]:
    return {
        "kafka": procs.read_pid(stack.kafka.nodes[0].pid_file),
        "postgres": stack.postgres.pid(),
        "prometheus": procs.read_pid(stack.prometheus.pid_file),
    }


def _use_env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.setenv("PANTHEON_STATE_DIR", str(settings.state_dir))
    monkeypatch.setenv("PANTHEON_KAFKA_PORT", str(settings.kafka_port))
    monkeypatch.setenv("PANTHEON_PG_PORT", str(settings.pg_port))
    monkeypatch.setenv("PANTHEON_PROM_PORT", str(settings.prom_port))
    monkeypatch.setenv("PANTHEON_GATEWAY_PORT", str(settings.gateway_port))


def test_up_twice_then_down_twice(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = private_settings()
    _use_env(monkeypatch, settings)
    stack = Stack(settings)
    with removed_afterwards(settings.state_dir):
        try:
            assert main(["up"]) == 0
            first = _pids(stack)
            assert all(first.values())
            _no_secrets_on_command_lines(settings)
            _no_lifecycle_api(stack.prometheus)
            assert main(["up"]) == 0  # idempotent: nothing restarted
            assert _pids(stack) == first
            # a process that died is started again by the next `up`, alone
            gateway_pid = stack.settings.state_dir / "consortium" / "gateways" / "alpha" / "pid"
            dead = int(gateway_pid.read_text())
            os.kill(dead, signal.SIGKILL)
            procs.wait_until(lambda: not procs.pid_alive(dead), timeout=10, what="the kill")
            assert main(["up"]) == 0
            assert procs.read_pid(gateway_pid) not in (None, dead)
            assert _pids(stack) == first
            out = capsys.readouterr().out
            assert f"127.0.0.1:{settings.kafka_port}" in out
            assert f"http://127.0.0.1:{settings.prom_port}" in out

            assert main(["status", "--json"]) == 0
            report = json.loads(capsys.readouterr().out)
            assert [(v["name"], v["healthy"]) for v in report["validators"]] == [
                ("alpha-0", True),
                ("beta-0", True),
                ("delta-0", True),
                ("gamma-0", True),
            ]
            assert [(s["name"], s["healthy"]) for s in report["services"]] == [
                ("kafka", True),
                ("postgres", True),
                ("prometheus", True),
            ]
        finally:
            assert main(["down"]) == 0
        assert main(["down"]) == 0  # stopping a stopped stack is fine
        assert not any(_pids(stack).values())
        assert main(["status"]) == 3  # non-zero: not healthy
        assert "stopped" in capsys.readouterr().out


def _no_secrets_on_command_lines(settings: Settings) -> None:
    """No process of the stack carries the database password, a seed or a master key in
    its argv (readable by every local user in /proc/<pid>/cmdline)."""
    secrets = stack_secrets(settings.state_dir)
    kinds = {Path(where).name for where in secrets.values()}
    assert {"password", "master.key", "service-key.json", "alpha.json"} <= kinds, kinds
    started = [
        pid
        for pid_file in settings.state_dir.rglob("pid")
        if (pid := procs.read_pid(pid_file)) is not None
    ]
    # kafka, prometheus, and per institution a validator, projector, gateway, batcher
    assert len(started) >= 2 + 4 * 4, started
    for pid in started:
        assert Path(f"/proc/{pid}/cmdline").read_bytes(), pid  # the scan can read them
    assert command_lines_carrying(secrets) == {}
    # the scan does find a leak: a process that has the password in its argv
    password = (settings.state_dir / "postgres" / "password").read_text().strip()
    leak = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", f"password={password}"]
    )
    try:
        # the kernel fills in a new command line a moment after execve has closed the
        # pipe Popen waits on, so an early read of /proc/<pid>/cmdline can be empty
        procs.wait_until(
            lambda: list(command_lines_carrying(secrets)) == [leak.pid],
            timeout=10,
            what="the scan to find the leaking command line",
        )
    finally:
        leak.kill()
        leak.wait()


def _no_lifecycle_api(prometheus: Prometheus) -> None:
    """Prometheus's unauthenticated lifecycle API is off; a reload is a SIGHUP."""
    for path in ("/-/quit", "/-/reload"):
        request = urllib.request.Request(f"{prometheus.url}{path}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=10)
        err.value.close()
        assert err.value.code in (403, 404), (path, err.value.code)
    assert prometheus.healthy()
    prometheus.reload()
    assert prometheus.healthy()


def test_restart_keeps_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopped stack starts again on the same state: same cluster, same database."""
    settings = private_settings()
    stack = Stack(settings)
    with removed_afterwards(settings.state_dir):
        try:
            stack.postgres.start()
            with psycopg.connect(stack.postgres.dsn()) as conn:
                conn.execute("CREATE TABLE kept (v text)")
                conn.execute("INSERT INTO kept VALUES ('survives')")
            stack.postgres.stop()
            stack.postgres.start()
            with psycopg.connect(stack.postgres.dsn()) as conn:
                assert conn.execute("SELECT v FROM kept").fetchall() == [("survives",)]
        finally:
            stack.down()


def test_taken_port_gives_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        settings = private_settings(state_dir=tmp_path).with_changes(prom_port=port)
        with pytest.raises(PortTakenError, match=rf"port {port} .*PANTHEON_PROM_PORT"):
            Prometheus(settings).start()


def test_cli_reports_errors_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PANTHEON_PG_PORT", "not-a-port")
    assert main(["status"]) == 2  # could not run (D36)
    err = capsys.readouterr().err
    assert "PANTHEON_PG_PORT='not-a-port' is not a port number" in err
