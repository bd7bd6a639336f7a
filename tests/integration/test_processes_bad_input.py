"""Long-running processes started with bad input: one line on stderr, exit 2, no traceback.

The CLI's one-shot tools are covered by ``test_cli_fresh_shell.py``; these are the processes
``pantheon up`` keeps running (validator, projector, gateway, batcher, the continuous
auditor), each started by hand with a bad DSN, another institution's key file, an
unreachable broker or a missing key file (decisions D36, D49). Without the start-up checks of
:mod:`runtime.startup` the broker cases waited forever and the database ones printed a log
line per connection attempt.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.keystore import create_genesis
from infra.postgres_server import Postgres

pytestmark = pytest.mark.integration

PANTHEON = str(Path(sys.executable).parent / "pantheon")
NO_BROKER = "127.0.0.1:1"
NO_DATABASE = "host=127.0.0.1 port=1 user=pantheon"


@dataclass(frozen=True)
class World:
    genesis: Path
    keystore: Path
    bootstrap: str
    server: str  # a reachable PostgreSQL server, its password in env
    env: dict[str, str]
    tmp: Path


@pytest.fixture(scope="module")
def world(
    bootstrap: str, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("bad")
    create_genesis(tmp, "bad", ["alpha", "beta"])
    server, secret = postgres.child_dsn("postgres")
    env = {**os.environ, **secret, "PANTHEON_IAM_MASTER_KEY": "00" * 32}
    env.pop("PANTHEON_STATE_DIR", None)
    yield World(tmp / "genesis.avro", tmp / "keys" / "alpha.json", bootstrap, server, env, tmp)


def _cases(w: World) -> dict[str, tuple[list[str], str]]:
    g, k = str(w.genesis), str(w.keystore)
    validator = ["validator", "--genesis", g, "--state-dir", str(w.tmp / "v")]
    projector = ["projector", "--genesis", g]
    gateway = ["gateway", "--port", "0", "--kek-dir", str(w.tmp / "kek")]
    batcher = ["batcher", "--genesis", g, "--institution", "alpha"]
    auditor = ["audit", "--every", "5", "--genesis", g, "--timeout", "5", "--workers", "0"]
    return {
        "validator: missing key file": (
            [
                *validator,
                "--keystore",
                "nofile.json",
                "--institution",
                "alpha",
                "--bootstrap",
                w.bootstrap,
            ],
            "nofile.json",
        ),
        "validator: another institution's key file": (
            [*validator, "--keystore", k, "--institution", "omega", "--bootstrap", w.bootstrap],
            "belongs to alpha, not omega",
        ),
        "validator: unreachable broker": (
            [*validator, "--keystore", k, "--institution", "alpha", "--bootstrap", NO_BROKER],
            "cannot reach Kafka at 127.0.0.1:1",
        ),
        "projector: bad DSN": (
            [
                *projector,
                "--institution",
                "alpha",
                "--bootstrap",
                w.bootstrap,
                "--dsn",
                NO_DATABASE,
            ],
            "Connection refused",
        ),
        "projector: unreachable broker": (
            [*projector, "--institution", "alpha", "--bootstrap", NO_BROKER, "--dsn", w.server],
            "cannot reach Kafka at 127.0.0.1:1",
        ),
        "gateway: bad DSN": (
            [*gateway, "--institution", "alpha", "--bootstrap", w.bootstrap, "--dsn", NO_DATABASE],
            "cannot reach PostgreSQL",
        ),
        "gateway: unreachable broker": (
            [*gateway, "--institution", "alpha", "--bootstrap", NO_BROKER, "--dsn", w.server],
            "cannot reach Kafka at 127.0.0.1:1",
        ),
        "gateway: missing key file": (
            [
                *gateway,
                "--institution",
                "alpha",
                "--bootstrap",
                w.bootstrap,
                "--dsn",
                w.server,
                "--keystore",
                "nofile.json",
                "--genesis",
                g,
            ],
            "cannot read the keystore nofile.json",
        ),
        "batcher: missing key file": (
            [*batcher, "--key", "nofile.json", "--bootstrap", w.bootstrap, "--dsn", w.server],
            "cannot read nofile.json",
        ),
        "batcher: unreachable broker": (
            [*batcher, "--keystore", k, "--bootstrap", NO_BROKER, "--dsn", w.server],
            "cannot reach Kafka at 127.0.0.1:1",
        ),
        "batcher: bad DSN": (
            [*batcher, "--keystore", k, "--bootstrap", w.bootstrap, "--dsn", NO_DATABASE],
            "cannot reach PostgreSQL",
        ),
        "auditor: bad DSN": (
            [*auditor, "--institution", "alpha", "--bootstrap", w.bootstrap, "--dsn", NO_DATABASE],
            "Connection refused",
        ),
        "auditor: unreachable broker": (
            [*auditor, "--bootstrap", NO_BROKER],
            "cannot reach Kafka at 127.0.0.1:1",
        ),
    }


CASES = list(
    _cases(World(Path("g"), Path("k"), "b", "s", {}, Path("t")))
)  # names only: the arguments need the fixture


@pytest.fixture(scope="module")
def started(world: World) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """Every case's process, all started at once: the broker cases each wait out the 15 s
    start-up check, so one after the other they took over a minute of waiting."""
    running = {
        case: subprocess.Popen(
            [PANTHEON, *argv],
            env=world.env,
            cwd=world.tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for case, (argv, _) in _cases(world).items()
    }
    try:
        yield running
    finally:
        for proc in running.values():
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.mark.parametrize("case", CASES)
def test_long_running_process_refuses_bad_input_in_one_line(
    world: World, started: dict[str, subprocess.Popen[str]], case: str
) -> None:
    _, expected = _cases(world)[case]
    proc = started[case]
    try:
        stdout, stderr = proc.communicate(timeout=120)  # the broker checks give up after 15 s
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, stdout, stderr)
    assert "Traceback" not in stdout + stderr
    assert len(lines) == 1, stderr
    assert expected in lines[0], lines[0]
