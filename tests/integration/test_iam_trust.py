"""Issue 17, IAM part, against the real broker and PostgreSQL (D21).

A chain (:class:`SimChain`) on which ``inst-1`` registered its IAM key (SERVICE) and
``inst-2`` a SERVICE key of its own; the chain projector and ``inst-1``'s IAM projection with
the production signer policy (:class:`ChainSigners`) run on one database; the IAM service
signs with the registered key at the projected height.

* Forged ``PermissionGranted{admin}`` events produced straight to ``<prefix>iam.inst-1``
  (unsigned; signed by an unregistered key; signed by ``inst-2``'s registered key; a genuine
  signed grant replayed after its revoke; a signed event of ``inst-2`` copied over) change
  nothing: the user's next token has no ``admin``; each is counted and reported by
  ``pantheon audit`` as refused, and the audit is otherwise clean.
* An event naming a key height the projected chain has not reached waits (the projection's
  position stays before it) and is applied once the chain gets there.
* A rotated-out IAM key: the service can no longer sign with it, and an event it backdates
  to a height where it was still active is refused once the topic's mark passed its revoke.
* An ``INSERT`` of an ``admin`` grant into ``iam_grants`` is reported by the audit (table,
  key, actual row) and gone after ``pantheon projections rebuild``, which audits clean.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from gateway.auth.crypto import MasterKey
from gateway.auth.passwords import FAST
from gateway.iam.bootstrap import ensure_setup_credential
from gateway.iam.commands import ChangeGrant, CreateGroup, decide
from gateway.iam.errors import NotApplied, NotAuthorized
from gateway.iam.service import IamService
from gateway.iam.signing import IamSigner, KeyNotActive, chain_key_height
from gateway.iam.state import evolve
from harness.consortium import read_partition
from harness.projections_support import CHAIN_ID, SimChain
from infra.postgres_server import Postgres
from ledger.iam_events import open_message, sign_event
from ledger.key_proofs import register_identity_args
from ledger.keys import KeyPair
from projections import rebuild
from projections.iam import ChainSigners, IamProjection
from projections.projector import ProjectorConfig, prepare
from projections.runner import ProjectionRunner
from readers import audit
from runtime.kafka_config import admin_config, producer_config
from runtime.topics import ensure_topics
from schemas.codec import encode

pytestmark = pytest.mark.integration
INST = "inst-1"


class Running:
    """The chain and IAM projections of one database, each in a runner thread."""

    def __init__(self, config: ProjectorConfig) -> None:
        self.projection, chain = prepare(config)
        self.iam = IamProjection(INST, prefix=config.prefix, signers=ChainSigners())
        self.runners = [chain, ProjectionRunner(chain.dsn, config.bootstrap, self.iam)]
        self.dsn = chain.dsn
        self.stop_event = threading.Event()
        self.threads = [
            threading.Thread(
                target=r.run, args=(self.stop_event,), kwargs={"idle_timeout": 0.05}, daemon=True
            )
            for r in self.runners
        ]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(30)


@dataclass
class World:
    sim: SimChain
    config: ProjectorConfig
    server_dsn: str
    running: Running
    service: IamService
    iam_key: KeyPair
    foreign_key: KeyPair  # inst-2's registered SERVICE key
    root: str
    alice: str

    @property
    def topic(self) -> str:
        return self.service.topic

    def wait_height(self, height: int) -> None:
        deadline = time.monotonic() + 60
        while self.running.projection.height < height:
            assert time.monotonic() < deadline, "the chain projection did not catch up"
            time.sleep(0.05)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture(scope="module")
def world(
    bootstrap: str, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    with build_world(bootstrap, postgres, tmp_path_factory) as built:
        yield built


@contextmanager
def build_world(
    bootstrap: str,
    postgres: Postgres,
    tmp_path_factory: pytest.TempPathFactory,
    on_chain: Callable[[SimChain], object] = lambda _sim: None,
) -> Iterator[World]:
    """The world of this module (also test_iam_append_time's); ``on_chain`` is called once
    both SERVICE keys are certified, before the projections start."""
    prefix = f"tr{uuid.uuid4().hex[:8]}."
    sim = SimChain(bootstrap, prefix, tmp_path_factory.mktemp("trust"))
    ensure_topics(
        AdminClient(admin_config(bootstrap)), prefix=prefix, institutions=[INST, "inst-2"]
    )
    iam_key, foreign_key = KeyPair.from_seed(os.urandom(32)), KeyPair.from_seed(os.urandom(32))
    sim.send(
        [
            sim.tx(
                sim.gov(INST),
                "RegisterIdentity",
                register_identity_args(
                    iam_key, chain_id=CHAIN_ID, institution_id=INST, kind="SERVICE", label="iam"
                ),
            ),
            sim.tx(
                sim.gov("inst-2"),
                "RegisterIdentity",
                register_identity_args(
                    foreign_key,
                    chain_id=CHAIN_ID,
                    institution_id="inst-2",
                    kind="SERVICE",
                    label="iam",
                ),
            ),
        ]
    )
    height = sim.finalize()
    on_chain(sim)
    config = ProjectorConfig(
        institution=INST,
        genesis=sim.genesis_path,
        bootstrap=bootstrap,
        prefix=prefix,
        dsn=postgres.dsn("postgres"),
        dbname=f"trust_{uuid.uuid4().hex[:10]}",
    )
    running = Running(config)
    master = MasterKey(os.urandom(32))
    service = IamService(
        bootstrap=bootstrap,
        dsn=running.dsn,
        institution=INST,
        master_key=master,
        prefix=prefix,
        token_ttl_s=60,
        password_params=FAST,
        signer=IamSigner(iam_key, chain_key_height(running.dsn, INST, iam_key.key_id)),
    )
    world = World(
        sim, config, postgres.dsn("postgres"), running, service, iam_key, foreign_key, "", ""
    )
    world.wait_height(height)
    try:
        credential = ensure_setup_credential(running.dsn, INST, master)
        assert credential is not None
        world.root = service.bootstrap_admin(credential, "root", "root-password")
        world.alice = service.create_user(world.root, "alice", "alice-password")
        service.grant(world.root, world.alice, "chain:read")
        yield world
    finally:
        world.running.stop()  # the one running now (a rebuild replaces it)
        service.close()
        sim.close()


def run_audit(w: World, tmp_path: Path) -> tuple[int, dict[str, Any]]:
    out = tmp_path / f"audit-{uuid.uuid4().hex[:6]}.json"
    code = audit.main(
        [
            "--genesis",
            str(w.sim.genesis_path),
            "--bootstrap",
            w.sim.bootstrap,
            "--prefix",
            w.sim.prefix,
            "--json",
            str(out),
            "--no-progress",
            "--workers",
            "0",
            "--institution",
            INST,
            "--dsn",
            w.server_dsn,
            "--dbname",
            w.config.database(),
        ]
    )
    return code, json.loads(out.read_text())


def refused(report: dict[str, Any]) -> dict[int, str]:
    return {
        f["offset"]: f["details"]["reason"]
        for f in report["findings"]
        if f["kind"] == "iam.refused"
    }


def errors(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["severity"] == "error"]


def perms(w: World) -> list[str]:
    return list(w.service.login("alice", "alice-password", "t").claims.perms)


def grant_event(w: World, event_id: str, institution: str = INST) -> bytes:
    return encode(
        "PermissionGranted",
        {
            "event_id": event_id,
            "institution_id": institution,
            "at_ms": int(time.time() * 1000),
            "subject": w.alice,
            "permission": "admin",
            "actor": w.root,
        },
    )


def produce(w: World, values: list[bytes]) -> list[int]:
    producer = Producer(producer_config(w.sim.bootstrap))
    offsets: list[int] = []
    for value in values:
        producer.produce(
            w.topic,
            key=w.alice.encode(),
            value=value,
            on_delivery=lambda _e, m: offsets.append(m.offset() or 0),
        )
        producer.flush(10)
    assert len(offsets) == len(values)
    return offsets


def test_forged_iam_events_change_nothing_and_are_reported(w: World, tmp_path: Path) -> None:
    assert "admin" not in perms(w)
    # A genuine admin grant, revoked: its signed message is what an attacker replays.
    w.service.grant(w.root, w.alice, "admin")
    assert "admin" in perms(w)
    w.service.revoke(w.root, w.alice, "admin")
    genuine = [
        m.value
        for m in read_partition(w.sim.bootstrap, w.topic)
        if (o := open_message(m.value, INST))
        and not isinstance(o, str)
        and o.schema == "pantheon.PermissionGranted"
        and o.record["subject"] == w.alice
        and o.record["permission"] == "admin"
    ]
    assert len(genuine) == 1
    height = w.running.projection.height
    stranger = KeyPair.from_seed(os.urandom(32))
    copied = sign_event(w.foreign_key, "inst-2", height, grant_event(w, "copy", "inst-2"))
    attacks = {
        "unsigned": grant_event(w, "forged-1"),
        "unknown_key": sign_event(stranger, INST, height, grant_event(w, "forged-2")),
        "foreign_key": sign_event(w.foreign_key, INST, height, grant_event(w, "forged-3")),
        "replayed": genuine[0],
        "wrong_institution": copied,
    }
    offsets = produce(w, list(attacks.values()))
    w.service.create_group(w.root, "after-the-attack")  # applied after everything before it
    assert "admin" not in perms(w)
    assert w.running.iam.rejected == {reason: 1 for reason in attacks}
    with psycopg.connect(w.running.dsn) as conn:
        assert conn.execute(
            "SELECT count(*) FROM iam_grants WHERE subject = %s", (w.alice,)
        ).fetchone() == (1,)  # chain:read only

    code, report = run_audit(w, tmp_path)
    assert code == 0 and errors(report) == [], errors(report)
    assert refused(report) == dict(zip(offsets, attacks, strict=True))
    assert report["projection"]["iam"]["row_findings"] == 0


def group_event(name: str, actor: str) -> bytes:
    return encode(
        "GroupCreated",
        {
            "event_id": f"ev-{name}",
            "institution_id": INST,
            "at_ms": 1,
            "group": name,
            "description": "",
            "actor": actor,
        },
    )


def groups(w: World) -> set[str]:
    with psycopg.connect(w.running.dsn) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM iam_groups").fetchall()}


def iam_position(w: World) -> int:
    with psycopg.connect(w.running.dsn) as conn:
        row = conn.execute(
            "SELECT next_offset FROM projection_positions WHERE projection = %s",
            (w.running.iam.name,),
        ).fetchone()
    return int(row[0]) if row else 0


def test_an_event_ahead_of_the_chain_waits_for_it(w: World) -> None:
    ahead = w.running.projection.height + 2
    [offset] = produce(
        w, [sign_event(w.iam_key, INST, ahead, group_event("from-the-future", w.root))]
    )
    wait_for(lambda: w.running.iam.waiting_for == ahead, "the projection waits")
    time.sleep(1.0)
    assert iam_position(w) == offset  # neither skipped nor acknowledged
    assert "from-the-future" not in groups(w)
    for i in range(2):  # two more certified blocks
        anchor = {"data_id": f"tick-{i}", "sha256": bytes(32), "metadata": ""}
        w.sim.send([w.sim.tx(w.sim.gov("inst-2"), "AnchorData", anchor)])
        w.sim.finalize()
    wait_for(lambda: "from-the-future" in groups(w), "the event applied once the chain got there")
    assert iam_position(w) == offset + 1 and w.running.iam.waiting_for == 0


def test_a_rotated_out_key_cannot_sign_nor_backdate(w: World, tmp_path: Path) -> None:
    old, new = w.iam_key, KeyPair.from_seed(os.urandom(32))
    before = w.running.projection.height  # the old key is active here
    g1 = w.sim.gov(INST)
    w.sim.send(
        [
            w.sim.tx(
                g1,
                "RegisterIdentity",
                register_identity_args(
                    new, chain_id=CHAIN_ID, institution_id=INST, kind="SERVICE", label="iam-2"
                ),
            ),
            w.sim.tx(g1, "RevokeIdentity", {"key_id": old.key_id}),
        ]
    )
    w.wait_height(w.sim.finalize())
    with pytest.raises(KeyNotActive):
        w.service.create_group(w.root, "signed-by-a-revoked-key")
    w.service.signer = IamSigner(new, chain_key_height(w.running.dsn, INST, new.key_id))
    w.service.create_group(w.root, "signed-by-the-new-key")  # the mark passes the revoke
    offsets = produce(w, [sign_event(old, INST, before, grant_event(w, "backdated"))])
    w.service.create_group(w.root, "after-the-backdate")
    assert "admin" not in perms(w)
    assert w.running.iam.rejected["stale_key"] == 1

    code, report = run_audit(w, tmp_path)
    assert code == 0 and errors(report) == [], errors(report)
    assert refused(report)[offsets[0]] == "stale_key"


def test_a_tampered_grant_is_reported_and_repaired_by_the_rebuild(w: World, tmp_path: Path) -> None:
    with psycopg.connect(w.running.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO iam_grants (subject, permission, granted_by, granted_at_ms) "
            "VALUES (%s, 'admin', %s, 1)",
            (w.alice, w.root),
        )
    assert "admin" not in perms(w)  # the gateway believes the signed topic (D74)...
    code, report = run_audit(w, tmp_path)  # ...and the audit says the table is wrong
    assert code == 1
    [finding] = errors(report)
    assert finding["kind"] == "iam.row.unexpected"
    assert finding["details"]["table"] == "iam_grants"
    assert finding["details"]["key"] == {"subject": w.alice, "permission": "admin"}

    live_applied, live_refused = applied(w), dict(w.running.iam.rejected)
    run_rebuild(w)
    assert applied(w) == live_applied  # the rebuild accepted exactly what live accepted
    assert "admin" not in perms(w)
    code, report = run_audit(w, tmp_path)
    assert code == 0 and errors(report) == [], errors(report)
    assert report["projection"]["iam"]["refused"] == live_refused  # and the audit too
    with psycopg.connect(w.running.dsn) as conn:
        groups = {r[0] for r in conn.execute("SELECT name FROM iam_groups").fetchall()}
    assert {"after-the-attack", "signed-by-the-new-key"} <= groups


def applied(w: World) -> dict[int, str]:
    """Offset -> event id of every IAM event the running projection applied."""
    with psycopg.connect(w.running.dsn) as conn:
        rows = conn.execute('SELECT "offset", event_id FROM iam_events').fetchall()
    return {int(o): str(e) for o, e in rows}


def run_rebuild(w: World) -> None:
    """``pantheon projections rebuild`` with the projections stopped, then restart them."""
    w.running.stop()
    argv = ["--institution", INST, "--genesis", str(w.sim.genesis_path)]
    argv += ["--bootstrap", w.sim.bootstrap, "--prefix", w.sim.prefix, "--dsn", w.server_dsn]
    assert rebuild.main([*argv, "--dbname", w.config.database()]) == 0
    w.running = Running(w.config)


def test_an_escalation_the_gateway_was_made_to_sign_is_reported_and_not_rebuilt(
    w: World, tmp_path: Path
) -> None:
    """Last in this module: the unauthorized events stay on the topic, so every later audit
    of this world reports them."""
    bob = w.service.create_user(w.root, "bob", "bob-password")
    # Bob has a login and write access to the database: he makes himself owner and admin...
    with psycopg.connect(w.running.dsn, autocommit=True) as conn:
        conn.execute("UPDATE iam_users SET is_owner = true WHERE user_id = %s", (bob,))
        conn.execute(
            "INSERT INTO iam_grants (subject, permission, granted_by, granted_at_ms) "
            "VALUES (%s, 'admin', %s, 1)",
            (bob, w.root),
        )
    # ...which gives him nothing here: the gateway decides from its view of the topic (D74)
    assert "admin" not in w.service.login("bob", "bob-password", "t").claims.perms
    with pytest.raises(NotAuthorized):
        w.service.create_group(bob, "bobs")
    # A gateway that decided from the tables (before D74) signed what he asked: played here by
    # deciding his commands against the state his rows describe, through the signed path.
    state = w.service.view.state
    misled = replace(
        state,
        principals={**state.principals, bob: replace(state.principals[bob], owner=True)},
        grants={**state.grants, bob: frozenset({"admin"})},
    )
    events = decide(misled, CreateGroup(actor=bob, group="bobs"), **_decide_args())
    for event in list(events):
        misled = evolve(misled, event.schema, event.record)
    grant = ChangeGrant(actor=bob, subject="group:bobs", permission="admin", granted=True)
    events += decide(misled, grant, **_decide_args())
    with pytest.raises(NotApplied):  # the live projection took them from its tables...
        w.service.publish(events, projection=w.service.projection)
    assert w.service.view.applied(str(e.record["event_id"]) for e in events) == set()

    code, report = run_audit(w, tmp_path)
    assert code == 1
    unauthorized = [f for f in errors(report) if f["kind"] == "iam.unauthorized"]
    assert [(f["details"]["actor"], f["details"]["event"]) for f in unauthorized] == [
        (bob, "GroupCreated"),
        (bob, "PermissionGranted"),
    ]
    assert all(isinstance(f["offset"], int) for f in unauthorized)
    assert report["projection"]["iam"]["row_findings"] > 0  # his rows, the group, its grant

    run_rebuild(w)  # authorization replayed from the signed events alone
    with psycopg.connect(w.running.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM iam_groups WHERE name = 'bobs'").fetchone() == (
            0,
        )
        assert conn.execute(
            "SELECT count(*) FROM iam_grants WHERE permission = 'admin' AND subject <> %s",
            (w.root,),
        ).fetchone() == (0,)
    code, report = run_audit(w, tmp_path)
    assert [f["kind"] for f in errors(report)] == ["iam.unauthorized"] * 2
    assert report["projection"]["iam"]["row_findings"] == 0


def _decide_args() -> dict[str, Any]:
    return {"now_ms": int(time.time() * 1000), "new_event_id": lambda: uuid.uuid4().hex}


@pytest.fixture
def w(world: World) -> World:
    return world
