"""A failed or interrupted ``pantheon up`` stops what it started, and only that (D60).

Real servers on a private state directory; a component's port is taken by a socket the test
holds, or the command is sent SIGINT or SIGTERM while it starts. Afterwards no process of
the stack that this ``up`` started runs and no pid file names a live one; what an earlier
``up`` started still runs under the same pid.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.stack_fixtures import private_settings, removed_afterwards, stack_variables
from infra import procs
from infra.cli import main
from infra.settings import Settings
from infra.stack import Stack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def squatted(port: int) -> Iterator[None]:
    """Something else listens on 127.0.0.1:``port`` meanwhile."""
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        yield


def claimed(state_dir: Path) -> dict[str, int]:
    """Every pid file under ``state_dir`` that names a live process (postmaster.pid too)."""
    return {
        str(path.relative_to(state_dir)): pid
        for path in sorted(state_dir.rglob("*pid"))
        if (pid := procs.read_pid(path)) is not None
    }


def roots(state_dir: Path) -> set[int]:
    """Live processes whose command line names ``state_dir`` (every server and member of the
    stack does: its configuration, data directory or genesis is there), not this one."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(state_dir) in argv and procs.pid_alive(int(entry.name)):
                found.add(int(entry.name))
    return found


def survivors(state_dir: Path) -> set[int]:
    """The stack's processes and everything below them (PostgreSQL's backends, ...)."""
    top = roots(state_dir)
    return top | set(procs.descendants(*top))


def use(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    for name, value in stack_variables(settings).items():
        monkeypatch.setenv(name, value)


def test_a_failed_up_stops_what_it_started_and_only_that(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = private_settings()
    use(monkeypatch, settings)
    state = settings.state_dir
    with removed_afterwards(state):
        try:
            # a server that cannot start: the two started beside it are stopped again
            with squatted(settings.prom_port):
                assert main(["up", "--no-consortium"]) == 2
            assert claimed(state) == {}
            assert survivors(state) == set()
            err = capsys.readouterr().err
            assert err.count("\n") == 1, err
            assert err.startswith(f"pantheon: error: prometheus: port {settings.prom_port} "), err
            # (Kafka's start is called off when it has not spawned yet; PostgreSQL's is not)
            assert re.search(r"; stopped what this `up` had started \((kafka, )?postgres\)$", err)

            # the cause removed, `up` works; its servers are an earlier `up`'s from now on
            assert main(["up", "--no-consortium"]) == 0
            servers = claimed(state)
            assert set(servers) == {"kafka/node-1/pid", "postgres/data/postmaster.pid"} | {
                "prometheus/pid"
            }
            server_roots = roots(state)

            # beta's gateway cannot start: alpha's and beta's members stop, the servers stay
            with squatted(settings.gateway_port + 1):
                assert main(["up"]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1, err
            assert f"gateway beta: port {settings.gateway_port + 1} " in err, err
            assert "had started (gateway, 2 projectors, 2 validators)" in err, err
            assert claimed(state) == servers
            assert roots(state) == server_roots  # no validator, projector or gateway

            # fixed: the whole consortium starts, and a second `up` changes nothing
            assert main(["up"]) == 0
            running = claimed(state)
            assert len(running) == 3 + 5 * 4, running
            assert main(["up"]) == 0
            assert claimed(state) == running
        finally:
            Stack(settings).down()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_up_stops_what_it_started(sig: signal.Signals) -> None:
    settings = private_settings()
    state = settings.state_dir
    env = {**os.environ, **stack_variables(settings), "PYTHONPATH": str(ROOT)}
    kafka_pid = state / "kafka" / "node-1" / "pid"
    with removed_afterwards(state):
        with subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "up"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        ) as up:
            try:
                procs.wait_until(
                    lambda: procs.read_pid(kafka_pid) is not None or up.poll() is not None,
                    timeout=120,
                    what="`up` to start Kafka",
                )
                assert up.poll() is None, "up ended before it was interrupted"
                up.send_signal(sig)
                _, err = up.communicate(timeout=180)
                left, left_files = survivors(state), claimed(state)
            finally:
                if up.poll() is None:
                    up.kill()
                Stack(settings).down()
        assert left_files == {}
        assert left == set()
        assert up.returncode == 130, err
        assert err.startswith("pantheon: interrupted; stopped what it had started ("), err
        assert err.count("\n") == 1 and "kafka" in err, err
