"""D62 against real validators, the real broker and PostgreSQL: an IAM change on an idle chain.

Four validator processes (:class:`harness.consortium.Consortium`) cut blocks only when
transactions arrive; ``inst-1``'s IAM key is registered on chain, its chain and IAM
projections run with the production signer policy (:class:`ChainSigners`), and its IAM
service signs at the projected height. The skew S is lowered to :data:`S_MS` for the module
(as in test_iam_append_time). No test sends a transaction to move the chain before an IAM
change: the chain is left idle for more than S first.

* An honest change is applied within its call: the service sends one tick (an
  ``AnchorData`` of its IAM key), the validators cut it into one block, and a second change
  right after sends none (unless it was appended S after that block: the rule either way).
* Processes of the institution share the last tick (one row, locked): a tick recorded for a
  later time stops another process's, whatever the chain says; a later time is let through.
* A self-signed event naming a far-future key height, and an event of a revoked key
  backdated more than S, make no tick and wait; the next honest change's tick lets the
  readers refuse them (``future``, ``stale_key``) and apply it.
* ``pantheon audit`` and ``pantheon projections rebuild`` decide as the live projection did.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from prometheus_client import REGISTRY
from psycopg_pool import ConnectionPool

from gateway.auth.crypto import MasterKey
from gateway.auth.passwords import FAST
from gateway.iam.bootstrap import ensure_setup_credential
from gateway.iam.clock_tick import ClockTicker
from gateway.iam.service import IamService
from gateway.iam.signing import IamSigner, chain_key_height
from harness.consortium import Consortium, read_partition
from infra.postgres_server import Postgres
from ledger import iam_time
from ledger.iam_events import sign_event
from ledger.iam_time import LOG_APPEND_TIME
from ledger.key_proofs import register_identity_args
from ledger.keys import KeyPair
from ledger.tx import parse_tx
from projections import rebuild
from projections.projector import ProjectorConfig
from readers import audit
from runtime.kafka_config import admin_config, producer_config
from runtime.topics import ensure_topics
from tests.integration.test_iam_trust import INST, Running, group_event

pytestmark = pytest.mark.integration
S_MS = 3_000
MARGIN_MS = 300
AHEAD_MS = 60_000  # the recorded times of the last test: later than any block it makes


@dataclass
class Idle:
    consortium: Consortium
    config: ProjectorConfig
    server_dsn: str
    running: Running
    service: IamService
    iam_key: KeyPair
    root: str = ""

    @property
    def dsn(self) -> str:
        return self.running.dsn

    def height(self) -> int:
        return self.running.projection.height

    def wait_height(self, height: int) -> None:
        wait_for(lambda: self.height() >= height, f"projected height {height}", 60)

    def submit(self, signer: KeyPair, operation: str, args: dict[str, Any]) -> int:
        """Certify one transaction (by the validators); the height of its block, projected."""
        raw = self.consortium.tx(signer, operation, args)
        self.consortium.send([raw])
        tx_id = parse_tx(raw).tx_id
        found: list[int] = []

        def projected() -> bool:
            with psycopg.connect(self.dsn) as conn:
                row = conn.execute(
                    "SELECT height, result_code FROM chain.transactions WHERE tx_id = %s",
                    (tx_id,),
                ).fetchone()
            if row is not None:
                assert row[1] == 0, f"{operation} rejected with code {row[1]}"
                found.append(int(row[0]))
            return bool(found)

        wait_for(projected, f"{operation} certified and projected", 60)
        return found[0]

    def last_stamp(self) -> int:
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute(
                "SELECT b.timestamp_ms FROM chain.blocks b JOIN chain.meta m USING (height)"
            ).fetchone()
        assert row is not None
        return int(row[0])

    def wait_idle(self, since_ms: int = 0) -> None:
        """Until the chain has had no block for more than S (and ``since_ms`` is S old)."""
        until = max(self.last_stamp(), since_ms) + S_MS + MARGIN_MS
        while time.time() * 1000 < until:
            time.sleep(0.05)

    def ticks(self) -> list[tuple[int, str, int]]:
        """(height, operation, result) of every certified transaction of the IAM key."""
        with psycopg.connect(self.dsn) as conn:
            rows = conn.execute(
                "SELECT height, operation, result_code FROM chain.transactions "
                "WHERE sender = %s ORDER BY height",
                (self.iam_key.key_id,),
            ).fetchall()
        return [(int(h), str(op), int(code)) for h, op, code in rows]


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def idle(
    bootstrap: str, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Idle]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(iam_time, "SKEW_MS", S_MS)
        consortium = Consortium(
            bootstrap, tmp_path_factory.mktemp("idle") / "c", 4, block_interval_ms=100
        )
        try:
            consortium.start_all()
            ensure_topics(
                AdminClient(admin_config(bootstrap)),
                prefix=consortium.prefix,
                institutions=[INST],
            )
            consortium.wait_ready(consortium.institutions)
            yield from _world(consortium, bootstrap, postgres)
        finally:
            consortium.close()


def _world(consortium: Consortium, bootstrap: str, postgres: Postgres) -> Iterator[Idle]:
    config = ProjectorConfig(
        institution=INST,
        genesis=consortium.genesis_path,
        bootstrap=bootstrap,
        prefix=consortium.prefix,
        dsn=postgres.dsn("postgres"),
        dbname=f"idle_{uuid.uuid4().hex[:10]}",
    )
    running = Running(config)
    iam_key = KeyPair.from_seed(os.urandom(32))
    master = MasterKey(os.urandom(32))
    service = IamService(
        bootstrap=bootstrap,
        dsn=running.dsn,
        institution=INST,
        master_key=master,
        prefix=consortium.prefix,
        token_ttl_s=60,
        password_params=FAST,
        signer=IamSigner(iam_key, chain_key_height(running.dsn, INST, iam_key.key_id)),
    )
    world = Idle(consortium, config, postgres.dsn("postgres"), running, service, iam_key)
    try:
        register = register_identity_args(
            iam_key, chain_id=consortium.chain_id, institution_id=INST, kind="SERVICE", label="iam"
        )
        world.submit(consortium.gov_key(INST), "RegisterIdentity", register)
        credential = ensure_setup_credential(running.dsn, INST, master)
        assert credential is not None
        world.root = service.bootstrap_admin(credential, "root", "root-password")
        yield world
    finally:
        world.running.stop()
        service.close()


def groups(w: Idle) -> set[str]:
    with psycopg.connect(w.dsn) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM iam_groups").fetchall()}


def produce_stamped(w: Idle, value: bytes) -> int:
    """Produce ``value`` to the IAM topic as any writer of the topic could; its append time."""
    stamps: list[tuple[int, int]] = []
    producer = Producer(producer_config(w.consortium.bootstrap))
    producer.produce(
        w.service.topic, value=value, on_delivery=lambda _e, m: stamps.append(m.timestamp())
    )
    assert producer.flush(10) == 0
    [(kind, appended)] = stamps
    assert kind == LOG_APPEND_TIME
    return appended


def tick_metric() -> float:
    value = REGISTRY.get_sample_value("pantheon_iam_clock_ticks_total", {"institution": INST})
    return value or 0.0


def test_an_honest_change_on_an_idle_chain_is_applied_with_one_tick(idle: Idle) -> None:
    w = idle
    w.wait_idle()
    height, ticks, metric = w.height(), w.ticks(), tick_metric()
    bob = w.service.create_user(w.root, "bob", "bob-password")  # NotApplied without D62
    with psycopg.connect(w.dsn) as conn:
        assert conn.execute("SELECT login FROM iam_users WHERE user_id = %s", (bob,)).fetchone()
    # one block was cut, and it holds the IAM key's tick, accepted
    assert w.height() == height + 1
    assert w.ticks() == [*ticks, (height + 1, "AnchorData", 0)]
    assert tick_metric() == metric + 1
    with psycopg.connect(w.dsn) as conn:
        anchor = conn.execute(
            "SELECT data_id, metadata FROM chain.anchors WHERE height = %s", (height + 1,)
        ).fetchone()
    assert anchor is not None and anchor[0].startswith(f"iam-clock/{INST}/")
    assert json.loads(anchor[1]) == {"purpose": "iam-clock"}
    # the chain is not idle any more: the next change sends nothing, unless its own append
    # time came S after the tick's block (a loaded machine): the rule, whichever it is
    tick_stamp = w.last_stamp()
    w.service.grant(w.root, bob, "chain:read")
    granted = read_partition(w.consortium.bootstrap, w.service.topic)[-1].timestamp_ms
    again = int(tick_stamp <= granted - S_MS)
    assert w.height() == height + 1 + again and tick_metric() == metric + 1 + again


@contextmanager
def ticker(w: Idle) -> Iterator[ClockTicker]:
    pool: ConnectionPool[Any] = ConnectionPool(
        w.dsn, min_size=1, max_size=1, open=True, kwargs={"autocommit": True}
    )
    try:
        yield ClockTicker(
            institution=INST,
            tx_topic=w.consortium.topic("tx"),
            pool=pool,
            producer=Producer(producer_config(w.consortium.bootstrap)),
            timeout_s=10.0,
        )
    finally:
        pool.close()


def test_a_far_future_event_makes_no_tick_and_is_refused_at_the_next_change(
    idle: Idle,
) -> None:
    w = idle
    w.wait_idle()
    height, metric = w.height(), tick_metric()
    stranger = KeyPair.from_seed(os.urandom(32))
    appended = produce_stamped(w, sign_event(stranger, INST, 2**62, group_event("far", w.root)))
    wait_for(lambda: w.running.iam.waiting_for == 2**62, "the projection waits")
    gauge = REGISTRY.get_sample_value("pantheon_iam_waiting_after_ms", {"institution": INST})
    assert gauge == appended + S_MS
    w.wait_idle(since_ms=appended)  # S after it, and nothing moved the chain meanwhile
    assert w.height() == height and tick_metric() == metric
    assert w.running.iam.waiting_for == 2**62
    w.service.create_group(w.root, "after-the-far-future")
    assert w.running.iam.rejected["future"] == 1
    assert "after-the-far-future" in groups(w) and "far" not in groups(w)
    assert w.height() == height + 1 and tick_metric() == metric + 1


def test_a_backdated_revoked_key_makes_no_tick_and_is_refused_at_the_next_change(
    idle: Idle,
) -> None:
    w = idle
    spare = KeyPair.from_seed(os.urandom(32))
    gov = w.consortium.gov_key(INST)
    register = register_identity_args(
        spare, chain_id=w.consortium.chain_id, institution_id=INST, kind="SERVICE", label="spare"
    )
    registered = w.submit(gov, "RegisterIdentity", register)
    w.submit(gov, "RevokeIdentity", {"key_id": spare.key_id})
    w.wait_idle()
    height, metric = w.height(), tick_metric()
    backdated = sign_event(spare, INST, registered, group_event("backdated", w.root))
    appended = produce_stamped(w, backdated)
    wait_for(
        lambda: (
            REGISTRY.get_sample_value("pantheon_iam_waiting_after_ms", {"institution": INST})
            == appended - S_MS
        ),
        "the projection waits for a block stamped after append - S",
    )
    assert w.height() == height and tick_metric() == metric
    w.service.create_group(w.root, "after-the-backdate")
    assert w.running.iam.rejected["stale_key"] == 1
    assert "after-the-backdate" in groups(w) and "backdated" not in groups(w)
    assert w.height() == height + 1 and tick_metric() == metric + 1


def applied(w: Idle) -> dict[int, str]:
    with psycopg.connect(w.dsn) as conn:
        rows = conn.execute('SELECT "offset", event_id FROM iam_events').fetchall()
    return {int(o): str(e) for o, e in rows}


def run_audit(w: Idle, tmp_path: Path) -> tuple[int, dict[str, Any]]:
    out = tmp_path / f"audit-{uuid.uuid4().hex[:6]}.json"
    argv = ["--genesis", str(w.consortium.genesis_path), "--bootstrap", w.consortium.bootstrap]
    argv += ["--prefix", w.consortium.prefix, "--json", str(out), "--no-progress"]
    argv += ["--workers", "0", "--institution", INST, "--dsn", w.server_dsn]
    code = audit.main([*argv, "--dbname", w.config.database()])
    return code, json.loads(out.read_text())


def test_audit_and_rebuild_decide_as_the_live_projection(idle: Idle, tmp_path: Path) -> None:
    w = idle
    live_applied, live_refused = applied(w), dict(w.running.iam.rejected)
    assert live_refused == {"future": 1, "stale_key": 1}
    code, report = run_audit(w, tmp_path)
    errors = [f for f in report["findings"] if f["severity"] == "error"]
    assert code == 0 and errors == [], errors
    assert report["projection"]["iam"]["refused"] == live_refused
    w.running.stop()
    argv = ["--institution", INST, "--genesis", str(w.consortium.genesis_path)]
    argv += ["--bootstrap", w.consortium.bootstrap, "--prefix", w.consortium.prefix]
    assert rebuild.main([*argv, "--dsn", w.server_dsn, "--dbname", w.config.database()]) == 0
    w.running = Running(w.config)
    assert applied(w) == live_applied  # the rebuild accepted exactly what live accepted
    code, report = run_audit(w, tmp_path)
    errors = [f for f in report["findings"] if f["severity"] == "error"]
    assert code == 0 and errors == [], errors
    assert report["projection"]["iam"]["refused"] == live_refused


def test_processes_of_the_institution_share_the_last_tick(idle: Idle) -> None:
    """Two tickers on their own pools and producers, as two gateway workers: a tick recorded
    for a time after the one asked for stops the other (whatever the chain says); a later
    time is let through. (Last: the times it records are ahead of the clock.)"""
    w = idle
    w.wait_idle()
    height, now = w.height(), int(time.time() * 1000)
    with ExitStack() as stack:
        first, second = (stack.enter_context(ticker(w)) for _ in range(2))
        sent = first.ensure_block_after(
            w.iam_key, after_ms=now - S_MS, appended_ms=now + AHEAD_MS, message=b"m"
        )
        # no block is stamped after that time: only the recorded tick stops this one
        held = second.ensure_block_after(
            w.iam_key, after_ms=now + AHEAD_MS // 2, appended_ms=now + 1, message=b"m"
        )
        w.wait_height(height + 1)
        again = second.ensure_block_after(
            w.iam_key, after_ms=now + AHEAD_MS, appended_ms=now + AHEAD_MS + 1, message=b"m"
        )
        w.wait_height(height + 2)
    assert sent is not None and held is None and again is not None
    assert w.ticks()[-2:] == [(height + 1, "AnchorData", 0), (height + 2, "AnchorData", 0)]
