"""The CLI as a user meets it in a new shell (D36), against one private local consortium.

Every command runs in a fresh environment, as ``env -i`` would give: only ``PATH`` (Debian's
default, without the virtualenv) and ``HOME``, and ``PYTHONPATH`` naming this checkout (the
shared virtualenv of the development machines may be installed from another checkout; in a
clone of one's own it changes nothing). No ``PANTHEON_*`` variable and no ``PGPASSWORD``
unless the printed command carries it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from harness.stack_fixtures import (
    private_settings,
    removed_afterwards,
    stack_variables,
    temp_state_dir,
)
from infra import procs
from infra.cli import main
from infra.invocation import DEFAULT_PATH, pantheon
from infra.settings import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
VARIABLES = (
    "PANTHEON_STATE_DIR",
    "PANTHEON_KAFKA_PORT",
    "PANTHEON_PG_PORT",
    "PANTHEON_PROM_PORT",
    "PANTHEON_GATEWAY_PORT",
    "PANTHEON_AUDIT_EVERY",
)


def fresh_env(**extra: str) -> dict[str, str]:
    """What a new login shell has: no virtualenv on PATH, no PANTHEON_*, no PGPASSWORD."""
    return {"PATH": DEFAULT_PATH, "HOME": os.environ["HOME"], "PYTHONPATH": str(ROOT), **extra}


def shell(command: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        env=fresh_env(**extra),
        cwd=os.getcwd(),  # printed commands are relative to the directory `up` ran in
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Settings, str]]:
    """A private consortium started by ``pantheon up``, and what ``up`` printed."""
    settings = private_settings()
    saved = {name: os.environ.get(name) for name in VARIABLES}
    os.environ.update(stack_variables(settings), PANTHEON_AUDIT_EVERY="5")
    with removed_afterwards(settings.state_dir):
        try:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert main(["up"]) == 0
            yield settings, out.getvalue()
        finally:
            main(["down"])
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def one_line_error(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The failure is exit ``code`` with exactly one line on stderr and no traceback."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_up_prints_where_to_look(stack: tuple[Settings, str]) -> None:
    settings, out = stack
    assert f"Status: `{pantheon('status', settings=settings)}`" in out
    assert f"Stop:   `{pantheon('down', settings=settings)}`" in out
    assert "First time?" in out  # what the setup credentials are for
    gateway = f"http://127.0.0.1:{settings.gateway_port}/"
    assert re.search(rf"^  alpha +\S+ +at {re.escape(gateway)}$", out, re.M), out


def test_tools_need_no_dsn_password_or_bootstrap(stack: tuple[Settings, str]) -> None:
    settings, _ = stack
    audit = shell(pantheon("audit", "--institution", "alpha", "--workers", "0", settings=settings))
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert audit.stdout.startswith("RESULT: CLEAN"), audit.stdout
    # the database is reached (no password typed): the reading simply has no proof
    proof = shell(
        pantheon(
            "proof",
            "--institution",
            "alpha",
            "--device",
            "00" * 32,
            "--sequence",
            "0",
            settings=settings,
        )
    )
    assert "no final proof for this reading" in one_line_error(proof, code=1)


def _alerts(settings: Settings) -> dict[str, dict[str, Any]]:
    url = f"http://127.0.0.1:{settings.prom_port}/api/v1/alerts"
    with urllib.request.urlopen(url, timeout=10) as resp:
        doc = json.load(resp)
    return {a["labels"]["alertname"]: a for a in doc["data"]["alerts"] if a["state"] == "firing"}


def _metric(settings: Settings, expr: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"query": expr})
    url = f"http://127.0.0.1:{settings.prom_port}/api/v1/query?{query}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        result: list[dict[str, Any]] = json.load(resp)["data"]["result"]
    return result


def test_a_tampered_row_fires_the_alert(stack: tuple[Settings, str]) -> None:
    """`up` runs an auditor per institution that Prometheus scrapes; the counters the
    dashboards use exist at 0 from the start; a changed row raises AuditDiscrepancy."""
    settings, _ = stack
    procs.wait_until(
        lambda: len(_metric(settings, 'pantheon_audit_discrepancies{service="auditor"}')) >= 4 * 8,
        timeout=90,
        what="the four auditors' series in Prometheus",
    )
    at_zero = (
        'pantheon_gateway_limited_total{code="QUERY_TOO_DEEP"}',
        'pantheon_l2_rejected_total{reason="BAD_SIGNATURE"}',
        "pantheon_validator_divergences_total",
    )
    institutions = {"alpha", "beta", "delta", "gamma"}

    def scraped() -> dict[str, set[str]]:
        """Per series, the institutions Prometheus has it from (a process restarted under
        load leaves a stale series for a while, so series are counted by institution)."""
        return {s: {r["metric"]["institution"] for r in _metric(settings, s)} for s in at_zero}

    try:
        procs.wait_until(  # every institution's series, each scraped once at least
            lambda: all(found == institutions for found in scraped().values()),
            timeout=120,
            what="the gateways', batchers' and validators' counters in Prometheus",
        )
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: found {scraped()}") from exc
    for series in at_zero:
        assert {r["value"][1] for r in _metric(settings, series)} == {"0"}, series
    assert "AuditDiscrepancy" not in _alerts(settings)
    dsn = (
        f"host=127.0.0.1 port={settings.pg_port} user=pantheon dbname=pantheon_alpha "
        f"password={(settings.state_dir / 'postgres' / 'password').read_text().strip()}"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE chain.transactions SET envelope = set_byte(envelope, 20, "
            "get_byte(envelope, 20) # 1) WHERE (height, position) = "
            "(SELECT height, position FROM chain.transactions ORDER BY height LIMIT 1)"
        )
    procs.wait_until(
        lambda: "AuditDiscrepancy" in _alerts(settings),
        timeout=120,
        interval=2,
        what="AuditDiscrepancy to fire",
    )
    alert = _alerts(settings)["AuditDiscrepancy"]
    assert alert["labels"]["check"] == "projection", alert  # the next test rebuilds alpha


def test_stop_rebuild_start_one_projector(stack: tuple[Settings, str]) -> None:
    settings, _ = stack
    pid_file = settings.state_dir / "consortium" / "projectors" / "alpha" / "pid"
    before = procs.read_pid(pid_file)
    assert before is not None
    rebuild = pantheon("projections", "rebuild", "--institution", "alpha", settings=settings)
    refused = one_line_error(shell(rebuild))
    stop = pantheon("stop", "projector", "--institution", "alpha", settings=settings)
    assert refused.endswith(f"stop it first: `{stop}`"), refused  # the command it prints runs:
    done = shell(stop)
    assert done.returncode == 0 and f"projector of alpha stopped (pid {before})" in done.stdout
    assert procs.read_pid(pid_file) is None
    assert procs.read_pid(pid_file.parents[1] / "beta" / "pid") is not None  # alpha's alone
    done = shell(rebuild)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rebuilt pantheon_alpha" in done.stdout
    done = shell(pantheon("start", "projector", "--institution", "alpha", settings=settings))
    assert done.returncode == 0, done.stdout + done.stderr
    after = procs.read_pid(pid_file)
    assert after not in (None, before)
    # restart: a new process, healthy (start waits for /healthz)
    gateway_pid = settings.state_dir / "consortium" / "gateways" / "beta" / "pid"
    old = procs.read_pid(gateway_pid)
    done = shell(pantheon("restart", "gateway", "--institution", "beta", settings=settings))
    assert done.returncode == 0, done.stdout + done.stderr
    assert procs.read_pid(gateway_pid) not in (None, old)
    assert "gateway of beta running" in done.stdout


def _no_password_state(settings: Settings) -> Path:
    """A state directory with the stack's genesis and settings but no password file."""
    state = temp_state_dir()
    (state / "consortium").mkdir()
    shutil.copy(settings.state_dir / "consortium" / "genesis.avro", state / "consortium")
    shutil.copy(settings.state_dir / "stack.json", state)
    return state


BAD_INPUTS = {
    # name: (argv after `pantheon`, text the one line must contain)
    "proof: unknown institution": (
        ["proof", "--institution", "omega", "--device", "00", "--sequence", "0"],
        "unknown institution 'omega': the local consortium has alpha",
    ),
    "proof: malformed hex": (
        ["proof", "--institution", "alpha", "--device", "nothex", "--sequence", "0"],
        "argument --device: 'nothex' is not hexadecimal",
    ),
    "audit: unknown institution": (["audit", "--institution", "omega"], "unknown institution"),
    "rebuild: unknown institution": (
        ["projections", "rebuild", "--institution", "omega"],
        "unknown institution 'omega'",
    ),
    "create-admin: unknown institution": (
        ["iam", "create-admin", "--institution", "omega", "--login", "x"],
        "unknown institution 'omega'",
    ),
    "stop: unknown institution": (
        ["stop", "gateway", "--institution", "omega"],
        "unknown institution 'omega'",
    ),
    "verify: missing file": (["verify", "nofile.json"], "cannot read nofile.json"),
    "verify-object: missing file": (
        ["verify-object", "--proof", "nofile.json", "nofile"],
        "cannot read nofile",
    ),
    "keys show: missing file": (["keys", "show", "nofile.json"], "nofile.json"),
    "genesis show: missing file": (["genesis", "show", "nofile.avro"], "nofile.avro"),
    "audit: unreachable broker": (
        ["audit", "--bootstrap", "127.0.0.1:1", "--timeout", "3", "--workers", "0"],
        "cannot reach the broker",
    ),
    "rebuild: unreachable broker": (
        ["projections", "rebuild", "--institution", "alpha", "--bootstrap", "127.0.0.1:1"],
        "cannot reach Kafka",
    ),
    "proof: unreachable database": (
        [
            "proof",
            "--institution",
            "alpha",
            "--device",
            "00",
            "--sequence",
            "0",
            "--dsn",
            "host=127.0.0.1 port=1 user=pantheon",
        ],
        "cannot reach PostgreSQL",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_with_exit_code_2(stack: tuple[Settings, str], case: str) -> None:
    settings, _ = stack
    argv, expected = BAD_INPUTS[case]
    line = one_line_error(shell(pantheon(*argv, settings=settings)))
    assert expected in line, line
    if case.startswith("verify"):
        assert "INVALID" not in line


@pytest.mark.parametrize(
    "argv",
    [
        ["proof", "--institution", "alpha", "--device", "00", "--sequence", "0"],
        ["audit", "--institution", "alpha"],
        ["projections", "rebuild", "--institution", "alpha"],
    ],
)
def test_missing_password_says_where_it_is(stack: tuple[Settings, str], argv: list[str]) -> None:
    settings, _ = stack
    state = _no_password_state(settings)
    try:
        line = one_line_error(shell(pantheon(*argv), PANTHEON_STATE_DIR=str(state)))
    finally:
        shutil.rmtree(state)
    assert f"no database password: the local stack's file {state}/postgres/password" in line
    assert "PGPASSWORD" in line


def test_the_printed_local_explorer_command_serves_the_stacks_chain(
    stack: tuple[Settings, str],
) -> None:
    """`up` names, not in backquotes (it serves until Ctrl-C), the command of D55."""
    settings, out = stack
    gateway = f"http://127.0.0.1:{settings.gateway_port}"
    found = re.search(
        rf"^ +(\S.* explorer --gateway {re.escape(gateway)} --genesis \w{{64}})$", out, re.M
    )
    assert found, out
    with subprocess.Popen(
        ["bash", "-c", f"exec {found.group(1)} --port 0"],
        env=fresh_env(),
        cwd=os.getcwd(),
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            lines = [process.stdout.readline() for _ in range(3)]
            assert f"reading public chain data from {gateway} (height " in lines[1], lines
            page = urllib.request.urlopen(lines[2].strip().split("#")[0], timeout=10).read()
            assert b"Pantheon explorer" in page
        finally:
            process.terminate()
            process.wait(30)


def test_zz_printed_commands_run_in_a_new_shell(stack: tuple[Settings, str]) -> None:
    """Last in the module: it runs the printed `down`."""
    settings, out = stack
    commands = [c for c in re.findall(r"`([^`]+)`", out) if "<" not in c]
    assert any(c.endswith(" status") for c in commands), out
    assert commands[-1].endswith(" down"), commands
    for command in commands:
        done = shell(command)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    pids = [procs.read_pid(f) for f in settings.state_dir.rglob("pid")]
    assert not any(pids), pids
    status = shell(pantheon("status", settings=settings))
    assert status.returncode == 3 and "UNHEALTHY" not in status.stdout
