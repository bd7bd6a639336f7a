"""IAM projection throughput with signatures verified (D21), against a real broker and
PostgreSQL.

Starts a private single-node Kafka and PostgreSQL. A chain finalized in this process
(``SimChain``) registers ``inst-1``'s IAM key; the chain projector projects it. Then
``--events`` signed IAM events (an administrator's bootstrap, then that administrator's
groups and grants, as ``IamService`` signs them) are produced to ``<prefix>iam.inst-1`` and
projected from offset 0 three ways, each into emptied IAM tables of the same database:

1. ``verified``: :class:`projections.iam.IamProjection` with the production policy
   (:class:`~projections.iam.ChainSigners`: key history from ``chain.key_activity``),
2. ``unverified``: the same SQL handlers over the same messages, decoded but with no key
   lookup, signature check, replay or mark bookkeeping (what the projection cost before D21,
   plus the envelope's decoding),
3. and, in memory only, :class:`ledger.iam_events.IamGate` (decode + Ed25519 verify + rules),
   without and with the append-time bound (D56, a clock and a broker stamp per message);
4. then the gateway's :class:`gateway.iam.view.IamView` (D74) reads the topic from offset 0,
   as a gateway does when it starts, with the same rule and ChainSigners.

Prints events/s for each; never asserts a timing.

    python -m bench.iam [--events 20000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Message, Producer
from confluent_kafka.admin import AdminClient
from psycopg_pool import ConnectionPool

from gateway.iam.view import IamView
from harness.projections_support import CHAIN_ID, SimChain
from harness.stack_fixtures import private_servers
from ledger import iam_time
from ledger.iam_events import IamGate, KeyHistory, Opened, open_message, sign_event
from ledger.iam_time import GENESIS_MS, LOG_APPEND_TIME, ChainClock
from ledger.key_proofs import register_identity_args
from ledger.keys import KeyPair
from projections import iam as iam_projection
from projections import iam_handlers
from projections.iam import ChainSigners, IamProjection
from projections.projector import ProjectorConfig, prepare
from projections.runner import ProjectionRunner
from runtime.kafka_config import admin_config, producer_config
from runtime.topics import ensure_topics
from schemas.codec import encode

INST = "inst-1"
PREFIX = "benchiam."


class Unverified(IamProjection):
    """The IAM handlers without any signer check (the comparison only)."""

    def apply(self, cur: psycopg.Cursor[Any], batch: Sequence[Message]) -> int | None:
        for msg in batch:
            value = msg.value()
            opened = open_message(value if isinstance(value, bytes) else b"", INST)
            if isinstance(opened, Opened):
                iam_handlers.HANDLERS[opened.schema](cur, opened.record)
        return None


def events(key: KeyPair, height: int, count: int) -> list[bytes]:
    """``count`` signed events: the bootstrap of the administrator ``u-0`` (the readers
    refuse an IAM event whose actor could not have written it, D21), then, by ``u-0``, a
    group and grants to it, in turn."""
    boot = {"institution_id": INST, "at_ms": 0, "actor": ""}
    records: list[tuple[str, dict[str, Any]]] = [
        (
            "UserRegistered",
            {
                **boot,
                "event_id": "boot-user",
                "user_id": "u-0",
                "login": "admin",
                "password_hash": "",
                "encrypted_profile": b"",
                "data_key_id": "",
            },
        ),
        ("AdminBootstrapped", {**boot, "event_id": "boot-owner", "user_id": "u-0"}),
        (
            "PermissionGranted",
            {**boot, "event_id": "boot-admin", "subject": "u-0", "permission": "admin"},
        ),
    ]
    for i in range(count - len(records)):
        base = {"event_id": f"e-{i}", "institution_id": INST, "at_ms": i, "actor": "u-0"}
        if i % 2 == 0:
            records.append(("GroupCreated", {**base, "group": f"g-{i}", "description": ""}))
        else:
            grant = {"subject": f"group:g-{i - 1}", "permission": "chain:read"}
            records.append(("PermissionGranted", {**base, **grant}))
    return [sign_event(key, INST, height, encode(schema, r)) for schema, r in records]


def project(dsn: str, bootstrap: str, projection: IamProjection, count: int, batch: int) -> float:
    """Seconds to project ``count`` events from offset 0 into emptied tables."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        iam_projection.migrate(conn)
        iam_projection.reset(conn, INST)
    runner = ProjectionRunner(dsn, bootstrap, projection, batch_size=batch)
    try:
        runner.positions()  # connect and seek before the clock starts
        began = time.perf_counter()
        while runner.positions().get((projection.topic, 0), 0) < count:
            runner.step(0.2)
        return time.perf_counter() - began
    finally:
        runner.close()


def setup(
    bootstrap: str, server_dsn: str, work: Path, count: int
) -> tuple[str, KeyPair, list[bytes]]:
    """The chain with the IAM key registered and projected, and ``count`` signed events on
    the IAM topic; returns (database DSN, IAM key, the events)."""
    sim = SimChain(bootstrap, PREFIX, work)
    ensure_topics(AdminClient(admin_config(bootstrap)), prefix=PREFIX, institutions=[INST])
    key = KeyPair.from_seed(os.urandom(32))
    register = register_identity_args(
        key, chain_id=CHAIN_ID, institution_id=INST, kind="SERVICE", label="iam"
    )
    sim.send([sim.tx(sim.gov(INST), "RegisterIdentity", register)])
    height = sim.finalize()
    config = ProjectorConfig(
        institution=INST,
        genesis=sim.genesis_path,
        bootstrap=bootstrap,
        prefix=PREFIX,
        dsn=server_dsn,
        dbname="bench_iam",
    )
    chain, runner = prepare(config)
    while chain.height < height:
        runner.step(0.2)
    runner.close()
    values = events(key, height, count)
    producer = Producer(producer_config(bootstrap, **{"linger.ms": 20}))
    for value in values:
        while True:
            try:
                producer.produce(f"{PREFIX}iam.{INST}", key=b"bench", value=value)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0
    sim.close()
    return runner.dsn, key, values


def measure(bootstrap: str, dsn: str, key: KeyPair, values: list[bytes], batch: int) -> None:
    """Print the three figures (see the module docstring)."""
    n = len(values)
    print(f"IAM projection, {n:,} signed events, {batch} per transaction:")
    verified = IamProjection(INST, prefix=PREFIX, signers=ChainSigners())
    seconds = project(dsn, bootstrap, verified, n, batch)
    assert not verified.rejected, verified.rejected
    print(f"  verified (ChainSigners):   {n / seconds:>9,.0f} events/s ({seconds:.2f} s)")
    unverified = Unverified(INST, prefix=PREFIX, signers=ChainSigners())
    seconds = project(dsn, bootstrap, unverified, n, batch)
    print(f"  unverified (handlers):     {n / seconds:>9,.0f} events/s ({seconds:.2f} s)")
    history = KeyHistory.from_rows([(key.key_id, 0, INST, "SERVICE", True, key.public_key)])
    gate = IamGate(INST, history.at)
    began = time.perf_counter()
    accepted = sum(isinstance(gate.admit(v), Opened) for v in values)
    seconds = time.perf_counter() - began
    assert accepted == n
    print(f"  rules only (IamGate, CPU): {n / seconds:>9,.0f} events/s ({seconds:.2f} s)")
    first = open_message(values[0], INST)
    assert isinstance(first, Opened)
    # blocks up to key_height + 1 stamped before append - S, one after: the key is looked up
    now, early = int(time.time() * 1000), int(time.time() * 1000) - iam_time.SKEW_MS - 1
    clock = ChainClock(running_max=[GENESIS_MS, *[early] * (first.key_height + 1), now])
    timed = IamGate(INST, history.at, clock=clock)
    stamp = (LOG_APPEND_TIME, now)
    began = time.perf_counter()
    accepted = sum(isinstance(timed.admit(v, stamp), Opened) for v in values)
    seconds = time.perf_counter() - began
    assert accepted == n
    print(f"  rules + append time (CPU): {n / seconds:>9,.0f} events/s ({seconds:.2f} s)")
    seconds, groups = view_catch_up(bootstrap, dsn, n)
    print(f"  gateway IAM view (D74):    {n / seconds:>9,.0f} events/s ({seconds:.2f} s, start to")
    print(f"                             every event decided; {groups} groups folded)")


def view_catch_up(bootstrap: str, dsn: str, count: int) -> tuple[float, int]:
    """Seconds from a new :class:`IamView` to its having decided ``count`` events, and the
    number of groups it folded."""
    with ConnectionPool(dsn, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
        began = time.perf_counter()
        view = IamView(
            bootstrap=bootstrap,
            topic=f"{PREFIX}iam.{INST}",
            institution=INST,
            pool=pool,
            signers=ChainSigners(),
        )
        try:
            if not view.wait_for(count - 1, 300):
                raise RuntimeError("the IAM view did not decide every event in 300 s")
            return time.perf_counter() - began, len(view.state.groups)
        finally:
            view.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--events", type=int, default=20000, help="signed IAM events")
    parser.add_argument("--batch", type=int, default=1000, help="events per transaction")
    args = parser.parse_args()
    if args.events < 3:
        parser.error("--events: at least 3 (the administrator's bootstrap)")
    with private_servers("bench-iam-") as (settings, _, postgres, work):
        bootstrap = settings.bootstrap_servers
        dsn, key, values = setup(bootstrap, postgres.dsn("postgres"), work, args.events)
        measure(bootstrap, dsn, key, values, args.batch)


if __name__ == "__main__":
    main()
