"""D56 against the real broker and PostgreSQL: the broker's append time bounds IAM events.

The world of :mod:`tests.integration.test_iam_trust` (a SimChain, the chain and IAM
projections with :class:`ChainSigners`, the IAM service), with the skew ``S`` lowered to
:data:`S_MS` for the whole module (every reader in this process reads the same value, so the
live projection, the rebuild and the audit decide alike) and a ticker cutting a certified
block every :data:`TICK_S`, as a busy chain would; a test pauses it to control which blocks
exist.

* A self-signed event naming ``key_height = 2**62`` waits while the chain has no block
  stamped after its append time + S, is then refused as ``future``, and the events after it
  are applied.
* A SERVICE key revoked on chain, whose holder writes an event more than S after the
  revocation block with a height where the key was active, is refused as ``stale_key``
  although no IAM event was applied after the revocation (the topic's mark is below it).
* A message a broker stamped with CreateTime is refused as ``create_time``.
* ``pantheon projections rebuild`` and ``pantheon audit`` agree with the live projection.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import REGISTRY

from harness.projections_support import CHAIN_ID, SimChain
from infra.postgres_server import Postgres
from ledger import iam_time
from ledger.iam_authz import AuthzState, PrincipalFlags
from ledger.iam_events import IamGate, KeyHistory, Opened, Refusal, sign_event
from ledger.iam_time import LOG_APPEND_TIME, ChainClock
from ledger.key_proofs import register_identity_args
from ledger.keys import KeyPair
from runtime.kafka_config import admin_config, consumer_config, producer_config
from tests.integration.test_iam_trust import (
    INST,
    World,
    applied,
    build_world,
    errors,
    group_event,
    groups,
    iam_position,
    refused,
    run_audit,
    run_rebuild,
    wait_for,
)

pytestmark = pytest.mark.integration
S_MS = 1_500
TICK_S = 0.3


class Ticker:
    """Cuts a certified block (an ``AnchorData`` of inst-2) every :data:`TICK_S`; the only
    user of the SimChain while it runs (tests go through :meth:`submit`)."""

    def __init__(self, sim: SimChain) -> None:
        self.sim, self.lock, self.count = sim, threading.Lock(), 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.wait(TICK_S):
            with self.lock:
                self._tick()

    def _tick(self) -> int:
        self.count += 1
        anchor = {"data_id": f"tick-{self.count}", "sha256": bytes(32), "metadata": ""}
        self.sim.send([self.sim.tx(self.sim.gov("inst-2"), "AnchorData", anchor)])
        return self.sim.finalize()

    def submit(self, raws: list[bytes]) -> int:
        """Certify ``raws`` in the next block; its height."""
        with self.lock:
            self.sim.send(raws)
            return self.sim.finalize()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No block is cut inside (the chain is idle)."""
        with self.lock:
            yield

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(30)


@pytest.fixture(scope="module")
def timed(
    bootstrap: str, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[World, Ticker]]:
    tickers: list[Ticker] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(iam_time, "SKEW_MS", S_MS)
        with build_world(
            bootstrap, postgres, tmp_path_factory, lambda sim: tickers.append(Ticker(sim))
        ) as world:
            try:
                yield world, tickers[0]
            finally:
                tickers[0].stop()


def produce_stamped(w: World, value: bytes) -> tuple[int, int]:
    """Produce ``value`` to the IAM topic: its offset and the broker's append time."""
    delivered: list[tuple[int, tuple[int, int]]] = []
    producer = Producer(producer_config(w.sim.bootstrap))
    producer.produce(
        w.topic,
        value=value,
        on_delivery=lambda _e, m: delivered.append((m.offset() or 0, m.timestamp())),
    )
    assert producer.flush(10) == 0
    [(offset, (ts_type, appended))] = delivered
    assert ts_type == LOG_APPEND_TIME  # the IAM topic is stamped by the broker
    return offset, appended


def rejected_metric(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "pantheon_iam_rejected_total", {"institution": INST, "reason": reason}
    )
    return value or 0.0


def test_a_far_future_key_height_is_refused_once_the_chain_passes_append_plus_s(
    timed: tuple[World, Ticker],
) -> None:
    w, ticker = timed
    stranger = KeyPair.from_seed(os.urandom(32))
    before = rejected_metric("future")
    with ticker.paused():
        attack = sign_event(stranger, INST, 2**62, group_event("far-future", w.root))
        offset, appended = produce_stamped(w, attack)
        wait_for(lambda: w.running.iam.waiting_for == 2**62, "the event waits")
        gauge = REGISTRY.get_sample_value("pantheon_iam_waiting_after_ms", {"institution": INST})
        assert gauge == appended + S_MS
        assert iam_position(w) == offset  # neither skipped nor acknowledged yet
        while time.time() * 1000 <= appended + S_MS + 200:
            time.sleep(0.1)
    # the ticker's next block is stamped after appended + S: the answer is final
    wait_for(lambda: w.running.iam.rejected["future"] == 1, "refused as future")
    assert rejected_metric("future") == before + 1
    w.service.create_group(w.root, "after-the-far-future")  # the topic goes on
    assert "after-the-far-future" in groups(w) and "far-future" not in groups(w)
    assert iam_position(w) > offset + 1 and w.running.iam.waiting_for == 0


def revoked_spare_key(w: World, ticker: Ticker) -> tuple[KeyPair, int, int]:
    """A SERVICE key of INST registered then revoked, in two blocks the chain projection
    has reached: the key, the height that registered it and the one that revoked it."""
    spare = KeyPair.from_seed(os.urandom(32))
    gov = w.sim.gov(INST)
    register = register_identity_args(
        spare, chain_id=CHAIN_ID, institution_id=INST, kind="SERVICE", label="iam-spare"
    )
    registered = ticker.submit([w.sim.tx(gov, "RegisterIdentity", register)])
    revoked = ticker.submit([w.sim.tx(gov, "RevokeIdentity", {"key_id": spare.key_id})])
    w.wait_height(revoked)
    return spare, registered, revoked


def test_a_revoked_key_cannot_backdate_past_s_with_no_later_iam_change(
    timed: tuple[World, Ticker],
) -> None:
    w, ticker = timed
    spare, registered, revoked = revoked_spare_key(w, ticker)
    time.sleep(S_MS / 1000 + 0.5)  # more than S after the revocation block's stamp
    # signed at a height where the key was active; nothing was applied since the revoke
    backdated = sign_event(spare, INST, registered, group_event("backdated-spare", w.root))
    offset, _appended = produce_stamped(w, backdated)
    wait_for(lambda: iam_position(w) > offset, "decided")
    with psycopg.connect(w.running.dsn) as conn:
        mark = conn.execute("SELECT max(key_height) FROM iam_events").fetchone()
    assert mark is not None and mark[0] < revoked  # the old rule (the mark) would accept it
    assert w.running.iam.rejected["stale_key"] == 1
    assert offset not in applied(w) and "backdated-spare" not in groups(w)


def test_a_create_time_message_is_refused(
    timed: tuple[World, Ticker], bootstrap: str, tmp_path: Path
) -> None:
    """A topic the broker does not stamp: the same signed bytes are refused as create_time
    (checked through the readers' gate; the projection and audit topics refuse to start
    without LogAppendTime, runtime.topics.check_topics)."""
    w, _ticker = timed
    admin = AdminClient(admin_config(bootstrap))
    name = f"ct{uuid.uuid4().hex[:8]}"
    config = {"message.timestamp.type": "CreateTime"}
    admin.create_topics([NewTopic(name, 1, 1, config=config)])[name].result(30)
    height = w.running.projection.height
    genuine = sign_event(w.iam_key, INST, height, group_event("create-time", w.root))
    producer = Producer(producer_config(bootstrap))
    producer.produce(name, value=genuine, timestamp=1)  # the writer chooses the time
    assert producer.flush(10) == 0
    consumer = Consumer(consumer_config(bootstrap, f"ct-{uuid.uuid4().hex[:6]}"))
    consumer.assign([TopicPartition(name, 0, 0)])
    msg = consumer.poll(30)
    consumer.close()
    assert msg is not None and msg.error() is None and msg.timestamp() == (1, 1)
    with psycopg.connect(w.running.dsn) as conn:
        rows = conn.execute(
            "SELECT key_id, height, institution_id, role, active, public_key "
            "FROM chain.key_activity WHERE key_id = %s",
            (w.iam_key.key_id,),
        ).fetchall()
        stamps = conn.execute("SELECT height, timestamp_ms FROM chain.blocks ORDER BY height")
        clock = ChainClock()
        clock.append(0, iam_time.GENESIS_MS)
        for block, stamp in stamps.fetchall():
            clock.append(int(block), int(stamp))

    def gate() -> IamGate:
        owner = AuthzState(
            principals={w.root: PrincipalFlags(owner=True)}, grants={w.root: {"admin"}}
        )
        return IamGate(INST, KeyHistory.from_rows(rows).at, clock=clock, authz=owner)

    assert gate().admit(genuine, msg.timestamp()) is Refusal.CREATE_TIME
    now = (LOG_APPEND_TIME, clock.running_max[-1] - 1)  # as the broker would have stamped it
    assert isinstance(gate().admit(genuine, now), Opened)


def test_rebuild_and_audit_agree_with_the_live_projection(
    timed: tuple[World, Ticker], tmp_path: Path
) -> None:
    w, _ticker = timed
    live_applied, live_refused = applied(w), dict(w.running.iam.rejected)
    assert live_refused == {"future": 1, "stale_key": 1}
    code, report = run_audit(w, tmp_path)
    assert code == 0 and errors(report) == [], errors(report)
    assert report["projection"]["iam"]["refused"] == live_refused
    assert sorted(refused(report).values()) == ["future", "stale_key"]
    run_rebuild(w)
    assert applied(w) == live_applied
    code, report = run_audit(w, tmp_path)
    assert code == 0 and errors(report) == [], errors(report)
    assert report["projection"]["iam"]["refused"] == live_refused
