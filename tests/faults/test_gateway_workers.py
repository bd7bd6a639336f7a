"""``pantheon gateway --workers 2``: two worker processes on one port (decisions D46).

One real gateway process (``python -m tests.faults.pinned_gateway``, as in
:mod:`tests.faults.test_hostile_clients`) over a database filled by the real chain projection.
Which worker answers a new connection is the kernel's choice (``SO_REUSEPORT`` hashes the
client's address); a test that needs a given worker opens connections until ``ss`` shows that
worker's pid owning the server side of one, then sends its requests on that keep-alive
connection.

Timing is only ever a generous deadline, never a measured figure.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka.admin import AdminClient
from psycopg.conninfo import conninfo_to_dict

from harness.gateway_support import ChainFixture
from infra.postgres_server import Postgres
from infra.procs import descendants, tail
from runtime.kafka_config import admin_config
from runtime.topics import ensure_topics
from tests.faults.test_hostile_clients import (
    HONEST_DEADLINE_S,
    HOST,
    PASSWORD,
    GatewayProcess,
    Institution,
    set_up_accounts,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SUMMARY = "{ summary { height } }"
REQUESTS = re.compile(
    r'^pantheon_gateway_requests_total\{institution="inst-1",operation="query",'
    r'outcome="ok"\} ([0-9.e+]+)$',
    re.MULTILINE,
)


@dataclass
class Workers:
    inst: Institution
    pids: list[int]
    height: int


@pytest.fixture(scope="module")
def workers(
    bootstrap: str, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Workers]:
    workdir = tmp_path_factory.mktemp("workers")
    chain = ChainFixture(bootstrap, postgres.dsn("postgres"), workdir / "chain")
    gw = GatewayProcess(
        "inst-1",
        dbname=str(conninfo_to_dict(chain.dsn)["dbname"]),
        bootstrap=bootstrap,
        prefix=chain.sim.prefix,
        postgres=postgres,
        workdir=workdir,
    )
    gw.argv_base += ["--workers", "2"]
    try:
        admin = AdminClient(admin_config(bootstrap))
        ensure_topics(admin, prefix=chain.sim.prefix, institutions=["inst-1"])
        gw.start()
        gw.wait_healthy()
        assert gw.proc is not None
        deadline = time.monotonic() + 60
        while len(pids := descendants(gw.proc.pid)) < 2:
            assert time.monotonic() < deadline, tail(gw.log, 40)
            time.sleep(0.2)
        inst = Institution(gw, chain.dsn)
        set_up_accounts(inst, "ada")
        yield Workers(inst, pids, chain.height)
    finally:
        gw.stop()
        print(f"--- {gw.log} ---\n{tail(gw.log, 30)}")
        chain.close()


def _owner(server_port: int, client_port: int) -> int | None:
    """The pid holding the server side of the connection from ``client_port``."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{server_port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        if line.split()[3].endswith(f":{client_port}"):  # the peer address column
            found = re.search(r"pid=(\d+)", line)
            return int(found.group(1)) if found else None
    return None


@contextlib.contextmanager
def connection_to(w: Workers, index: int) -> Iterator[http.client.HTTPConnection]:
    """A keep-alive connection that worker ``index`` accepted."""
    port, want = w.inst.gateway.port, w.pids[index]
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, f"no connection reached worker {index}"
        conn = http.client.HTTPConnection(HOST, port, timeout=HONEST_DEADLINE_S)
        conn.connect()
        assert conn.sock is not None
        client_port = conn.sock.getsockname()[1]
        owner = None
        for _ in range(50):  # until the worker has accepted it
            owner = _owner(port, client_port)
            if owner is not None:
                break
            time.sleep(0.02)
        if owner == want:
            break
        conn.close()
    try:
        yield conn
    finally:
        conn.close()


def post(
    conn: http.client.HTTPConnection, query: str, token: str | None = None, **variables: Any
) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    conn.request("POST", "/graphql", json.dumps({"query": query, "variables": variables}), headers)
    resp = conn.getresponse()
    body = json.loads(resp.read())
    assert resp.status == 200 and isinstance(body, dict), body
    return body


def served_queries(conn: http.client.HTTPConnection) -> float:
    conn.request("GET", "/metrics")
    resp = conn.getresponse()
    raw = resp.read()
    assert resp.status == 200
    found = REQUESTS.search(raw.decode())
    return 0.0 if found is None else float(found.group(1))


def test_both_workers_serve_and_metrics_sum_across_them(workers: Workers) -> None:
    token = workers.inst.user_token
    assert len(workers.pids) == 2
    with connection_to(workers, 0) as first, connection_to(workers, 1) as second:
        before = served_queries(first)
        for conn, count in ((first, 3), (second, 5)):  # each worker answers `count` queries
            for _ in range(count):
                body = post(conn, SUMMARY, token)
                assert body["data"]["summary"]["height"] >= workers.height
        for conn in (first, second):  # whichever worker answers /metrics, it reports both
            assert served_queries(conn) - before == 8


def test_login_throttling_counts_failures_of_every_worker(workers: Workers) -> None:
    """Three free failures (ThrottlePolicy), then a wait: counted across the workers, so the
    fourth failure blocks although no worker saw more than two (attempts alternate)."""
    codes: list[str] = []
    with connection_to(workers, 0) as first, connection_to(workers, 1) as second:
        for attempt in range(8):
            body = post(
                (first, second)[attempt % 2],
                "mutation($u: String!, $p: String!) { login(username: $u, password: $p)"
                " { token error { code } } }",
                u="ada",
                p=PASSWORD + "-wrong",
            )
            assert body["data"]["login"]["token"] is None
            codes.append(body["data"]["login"]["error"]["code"])
            if codes[-1] == "THROTTLED":
                break
    assert codes[:4] == ["LOGIN_FAILED"] * 4, codes
    # Per-process counters would block only at the 9th attempt (the 4th one a worker sees);
    # the first wait is 1 s, doubling, so a slow machine may let one or two more through.
    assert codes[-1] == "THROTTLED" and len(codes) <= 7, codes
    with psycopg.connect(workers.inst.dsn, autocommit=True) as conn:
        (failures,) = conn.execute(
            "SELECT failures FROM iam_login_throttle WHERE key = %s",
            ('["pair","ada","127.0.0.1"]',),
        ).fetchone() or (0,)
    assert failures == len(codes) - 1


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((HOST, port)) == 0


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_killing_the_parent_stops_the_workers(workers: Workers) -> None:
    """Last: SIGKILL of the parent (no handler runs) still stops every worker, so no orphan
    keeps the port."""
    gw = workers.inst.gateway
    assert gw.proc is not None
    gw.proc.kill()
    gw.proc.wait(10)
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers.pids) or _listening(gw.port):
        assert time.monotonic() < deadline, f"workers still running:\n{tail(gw.log, 40)}"
        time.sleep(0.2)
