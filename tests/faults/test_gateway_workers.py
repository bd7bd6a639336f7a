"""``pantheon gateway --workers 2``: two worker processes on one port (decisions D46).

One real gateway process (``python -m tests.faults.pinned_gateway``, as in
:mod:`tests.faults.test_hostile_clients`) over a database filled by the real chain projection.
Which worker answers a new connection is the kernel's choice; to make it ours, a test stops
one worker with ``SIGSTOP`` (it then accepts nothing, and the other takes every connection)
and lets it go on with ``SIGCONT``.

Timing is only ever a generous deadline, never a measured figure.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


@contextlib.contextmanager
def only(w: Workers, index: int) -> Iterator[None]:
    """Every new connection goes to worker ``index``: the others are stopped meanwhile."""
    others = [pid for i, pid in enumerate(w.pids) if i != index]
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)


def served_queries(w: Workers) -> float:
    status, raw = w.inst.gateway.request("GET", "/metrics")
    assert status == 200
    found = REQUESTS.search(raw.decode())
    return 0.0 if found is None else float(found.group(1))


def test_both_workers_serve_and_metrics_sum_across_them(workers: Workers) -> None:
    gw, token = workers.inst.gateway, workers.inst.user_token
    assert len(workers.pids) == 2
    before = served_queries(workers)
    for index, count in ((0, 3), (1, 5)):
        with only(workers, index):  # each worker alone answers `count` queries
            for _ in range(count):
                status, body = gw.graphql(SUMMARY, token)
                assert status == 200 and body["data"]["summary"]["height"] >= workers.height
    for index in (0, 1):  # whichever worker answers /metrics, it reports both
        with only(workers, index):
            assert served_queries(workers) - before == 8


def test_login_throttling_counts_failures_of_every_worker(workers: Workers) -> None:
    """Three free failures (ThrottlePolicy), then a wait: counted across the workers, so the
    fourth failure blocks even though no worker saw more than two."""
    gw = workers.inst.gateway
    codes: list[str] = []
    for attempt in range(8):
        with only(workers, attempt % 2):
            payload = gw.login("ada", PASSWORD + "-wrong")
        assert payload["token"] is None
        codes.append(payload["error"]["code"])
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
