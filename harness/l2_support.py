"""Support for the Layer-2 tests and bench: a real chain, its projection and the batcher.

:class:`L2Stack` runs a real validator process per institution (``harness.consortium``), the
chain projection of ``inst-1`` in a thread of this process (``ProjectionRunner``), registers a
SERVICE identity for the batcher and the devices on chain, and starts/kills the batcher as an
OS process (``python -m readers.batcher``) so that SIGKILL is real. :func:`workload` builds
valid, forged, replayed, unknown-device and malformed messages with the expected outcome of
each, and :meth:`L2Stack.check` compares the database, the chain and the rejected topic with
it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from harness.consortium import REPO, Consortium, new_key
from infra.keystore import write_secret
from infra.postgres_server import without_password
from ledger.key_proofs import register_identity_args
from ledger.keys import KeyPair
from ledger.l2 import Reason
from ledger.merkle import root
from projections import l2 as store
from projections.projector import ProjectorConfig, prepare
from readers.batcher import rejected_topic
from runtime.kafka_config import consume_ready, consumer_config
from schemas.codec import decode
from streams.devices import Device, DeviceProducer, register_devices
from streams.sdk import LedgerClient

INSTITUTION = "inst-1"


@dataclass(slots=True)
class Workload:
    """Messages to send, in order, and what the batcher must do with each."""

    messages: list[tuple[bytes, bytes]] = field(default_factory=list)
    valid: set[tuple[bytes, int]] = field(default_factory=set)  # (device, sequence) readings
    valid_leaves: int = 0
    rejects: Counter[tuple[bytes, str]] = field(default_factory=Counter)  # (raw, reason)


def workload(
    devices: list[Device],
    records: int,
    *,
    bundle_devices: int = 0,
    bundle_size: int = 100,
    bad_every: int = 50,
    unknown: KeyPair | None = None,
    revoked: Device | None = None,
) -> Workload:
    """``records`` readings round-robin over ``devices`` (the first ``bundle_devices`` send
    bundles of ``bundle_size``); every ``bad_every``-th message is followed by a forgery (same
    sequence as the next reading, bad signature), a replay of it, and now and then an
    unknown-device and a malformed message."""
    w = Workload()
    per_device = records // len(devices)
    now = int(time.time() * 1000)
    count = 0
    for i in range(per_device):
        for d_index, device in enumerate(devices):
            is_bundle = d_index < bundle_devices
            if is_bundle and i % bundle_size:
                continue
            if is_bundle:
                n = min(bundle_size, per_device - i)
                first = device.next_sequence
                msg = device.bundle([(now + i + j, f"r{i + j}".encode()) for j in range(n)])
                w.valid.update((device.key.key_id, first + j) for j in range(n))
            else:
                seq = device.next_sequence
                if count % bad_every == 7:  # a forgery takes the next sequence first
                    key, raw = device.record(b"genuine", measured_at_ms=now)
                    device.next_sequence = seq
                    forged = raw[:-1] + bytes([raw[-1] ^ 0x01])
                    w.messages.append((key, forged))
                    w.rejects[(forged, Reason.BAD_SIGNATURE.value)] += 1
                msg = device.record(f"reading {i}".encode(), measured_at_ms=now + i)
                w.valid.add((device.key.key_id, seq))
            w.messages.append(msg)
            w.valid_leaves += 1
            count += 1
            if count % bad_every == 0:
                w.messages.append(msg)  # replay
                w.rejects[(msg[1], Reason.REPLAY.value)] += 1
            if count % (bad_every * 10) == 3:
                junk = b"\xc3\x01" + os.urandom(30)
                w.messages.append((b"junk", junk))
                w.rejects[(junk, Reason.MALFORMED.value)] += 1
                if unknown is not None:
                    stranger = Device(unknown, next_sequence=count)
                    key, raw = stranger.record(b"who am i", measured_at_ms=now)
                    w.messages.append((key, raw))
                    w.rejects[(raw, Reason.UNKNOWN_DEVICE.value)] += 1
                if revoked is not None:
                    key, raw = revoked.record(b"revoked", measured_at_ms=now)
                    w.messages.append((key, raw))
                    w.rejects[(raw, Reason.REVOKED_DEVICE.value)] += 1
    return w


class L2Stack:
    """A real chain of ``n`` validators, the projection of inst-1, and the batcher process."""

    def __init__(
        self,
        bootstrap: str,
        dsn_server: str,
        workdir: Path,
        *,
        devices: int = 100,
        n: int = 1,
        block_interval_ms: int = 200,
    ) -> None:
        self.workdir = workdir
        self.bootstrap = bootstrap
        self.consortium = Consortium(
            bootstrap,
            workdir / "chain",
            n=n,
            block_interval_ms=block_interval_ms,
            max_block_txs=2000,
        )
        self.prefix = self.consortium.prefix
        self.consortium.start_all()
        self.dbname = f"l2_{uuid.uuid4().hex[:10]}"
        self.dsn_server = dsn_server
        config = ProjectorConfig(
            institution=INSTITUTION,
            genesis=self.consortium.genesis_path,
            bootstrap=bootstrap,
            prefix=self.prefix,
            dsn=dsn_server,
            dbname=self.dbname,
        )
        self.projection, self.runner = prepare(config)
        self.dsn = self.runner.dsn
        with self.connect() as conn:  # the batcher applies them too; tests query before it runs
            store.migrate(conn)
        self._stop = threading.Event()
        self._projector = threading.Thread(target=self._project, name="projector", daemon=True)
        self._projector.start()
        self.service = new_key()
        self.key_file = workdir / "batcher-key.json"
        write_secret(self.key_file, {**self.service.describe(), "seed": self.service.seed.hex()})
        gov = self.consortium.gov_key(INSTITUTION)
        self.devices = [Device(new_key()) for _ in range(devices)]
        self.revoked = Device(new_key())
        with LedgerClient(
            bootstrap,
            gov,
            self.consortium.chain_id,
            prefix=self.prefix,
            genesis=self.consortium.genesis,
        ) as client:
            receipt = client.submit_and_wait(
                "RegisterIdentity",
                register_identity_args(
                    self.service,
                    chain_id=self.consortium.chain_id,
                    institution_id=INSTITUTION,
                    kind="SERVICE",
                    label="batcher",
                ),
            )
            assert receipt.accepted, receipt
            register_devices(
                client,
                [d.key for d in [*self.devices, self.revoked]],
                institution=INSTITUTION,
            )
            receipt = client.submit_and_wait("RevokeIdentity", {"key_id": self.revoked.key.key_id})
            assert receipt.accepted, receipt
        self.wait_devices(len(self.devices) + 1)
        self.wait_revoked(self.revoked.key.key_id)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    def _project(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                self.runner.run(self._stop, idle_timeout=0.2)
            except Exception:
                self._stop.wait(backoff)

    def connect(self) -> psycopg.Connection[Any]:
        """A connection to the institution's database."""
        return psycopg.connect(self.dsn, autocommit=True)

    def wait_devices(self, count: int, timeout: float = 60.0) -> None:
        """Until the projection holds ``count`` device keys."""
        deadline = time.monotonic() + timeout
        with self.connect() as conn:
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT count(*) FROM chain.keys WHERE role = 'DEVICE'"
                ).fetchone()
                if row and row[0] >= count:
                    return
                time.sleep(0.2)
        raise AssertionError(f"devices not projected within {timeout}s")

    def wait_revoked(self, kid: bytes, timeout: float = 60.0) -> None:
        """Until the projection shows ``kid`` inactive."""
        deadline = time.monotonic() + timeout
        with self.connect() as conn:
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT active FROM chain.keys WHERE key_id = %s", (kid,)
                ).fetchone()
                if row is not None and not row[0]:
                    return
                time.sleep(0.2)
        raise AssertionError("revocation not projected")

    # -- the batcher process -------------------------------------------------------------------
    def start_batcher(self, *extra: str) -> None:
        """Start ``python -m readers.batcher`` (logs appended to batcher.log)."""
        self.starts += 1
        self._log = (self.workdir / "batcher.log").open("ab")
        self._log.write(f"\n===== start #{self.starts} =====\n".encode())
        self._log.flush()
        server, secret_env = without_password(self.dsn_server)  # no password in argv
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO), **secret_env}
        argv = [
            sys.executable,
            "-m",
            "readers.batcher",
            "--institution",
            INSTITUTION,
            "--genesis",
            str(self.consortium.genesis_path),
            "--key",
            str(self.key_file),
            "--bootstrap",
            self.bootstrap,
            "--prefix",
            self.prefix,
            "--dsn",
            server,
            "--dbname",
            self.dbname,
            *extra,
        ]
        self._proc = subprocess.Popen(
            argv, stdout=self._log, stderr=self._log, cwd=REPO, env=env, start_new_session=True
        )

    def kill_batcher(self) -> None:
        """SIGKILL the batcher."""
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait()
        if self._log is not None:
            self._log.close()
        self._proc = None

    def stop_batcher(self) -> int | None:
        """SIGTERM the batcher and wait; its exit code."""
        if self._proc is None:
            return None
        self._proc.send_signal(signal.SIGTERM)
        code = self._proc.wait(30)
        if self._log is not None:
            self._log.close()
        self._proc = None
        return code

    def batcher_alive(self) -> bool:
        """Whether the batcher process runs."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The end of the batcher's log."""
        path = self.workdir / "batcher.log"
        return (
            "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            if path.exists()
            else ""
        )

    # -- traffic and checks ---------------------------------------------------------------------
    def send(self, messages: list[tuple[bytes, bytes]]) -> None:
        """Produce device messages in order."""
        with DeviceProducer(self.bootstrap, prefix=self.prefix) as out:
            for m in messages:
                out.send(m)

    def counts(self) -> tuple[int, int, int, int]:
        """(records in sealed batches, batches, committed batches, rejected rows)."""
        with self.connect() as conn:
            row = conn.execute(
                "SELECT coalesce(sum(record_count), 0), count(*), "
                "count(*) FILTER (WHERE state = 'committed') "
                "FROM l2.batches"
            ).fetchone()
            rej = conn.execute("SELECT count(*) FROM l2.rejected").fetchone()
        assert row is not None and rej is not None
        return int(row[0]), int(row[1]), int(row[2]), int(rej[0])

    def wait_done(self, w: Workload, timeout: float = 120.0) -> float:
        """Until every valid reading is in a committed batch that the chain projection holds
        and every reject is stored; returns the seconds waited."""
        start = time.monotonic()
        want_rejects = sum(w.rejects.values())
        while time.monotonic() - start < timeout:
            records, batches, committed, rejected = self.counts()
            if records >= len(w.valid) and rejected >= want_rejects and committed == batches:
                with self.connect() as conn:
                    row = conn.execute(
                        "SELECT count(*) FROM l2.batches b JOIN chain.l2_batches c USING (batch_id)"
                    ).fetchone()
                if row and row[0] == batches:
                    return time.monotonic() - start
            time.sleep(0.2)
        raise AssertionError(
            f"not done after {timeout}s: {self.counts()} want {len(w.valid)} "
            f"records, {want_rejects} rejects\n{self.log_tail()}"
        )

    def check(self, w: Workload) -> None:
        """Exactly the valid readings are anchored, once, under roots the chain holds; exactly the
        bad messages are rejected, with their reasons."""
        with self.connect() as conn:
            got: set[tuple[bytes, int]] = set()
            leaves = 0
            for kid, first, last in conn.execute(
                "SELECT device_key_id, first_sequence, last_sequence FROM l2.leaves"
            ).fetchall():
                leaves += 1
                got.update((bytes(kid), s) for s in range(first, last + 1))
            assert leaves == w.valid_leaves, (leaves, w.valid_leaves)
            assert got == w.valid
            for batch_id, on_chain_root, count in conn.execute(
                "SELECT c.batch_id, c.merkle_root, c.leaf_count FROM l2.batches b "
                "JOIN chain.l2_batches c USING (batch_id)"
            ).fetchall():
                stored = store.batch_leaves(conn, batch_id)
                assert len(stored) == count and root(stored) == bytes(on_chain_root), batch_id
            rows = conn.execute("SELECT raw, reason, published FROM l2.rejected").fetchall()
        stored_rejects = Counter((bytes(raw), reason) for raw, reason, _ in rows)
        assert stored_rejects == w.rejects
        assert self.rejected_on_topic() == w.rejects

    def rejected_on_topic(self, timeout: float = 30.0) -> Counter[tuple[bytes, str]]:
        """Rejected messages on ``<prefix>l2.rejected``, deduplicated by input position."""
        want = 0
        with self.connect() as conn:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE NOT published), count(*) FROM l2.rejected"
                ).fetchone()
                assert row is not None
                if row[0] == 0:
                    want = int(row[1])
                    break
                time.sleep(0.2)
        topic = rejected_topic(self.prefix)
        consumer = Consumer(consumer_config(self.bootstrap, f"check-{uuid.uuid4().hex}"))
        seen: dict[tuple[str, int, int], tuple[bytes, str]] = {}
        try:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
            deadline = time.monotonic() + timeout
            while len(seen) < want and time.monotonic() < deadline:
                for msg in consume_ready(consumer, 1000, 0.5):
                    if msg.error() is None:
                        _, rec = decode(msg.value() or b"", "L2Rejected")
                        seen[(rec["topic"], rec["partition"], rec["offset"])] = (
                            rec["raw"],
                            rec["reason"],
                        )
        finally:
            consumer.close()
        return Counter(seen.values())

    def close(self) -> None:
        """Stop everything this stack started."""
        self.kill_batcher()
        self._stop.set()
        self._projector.join(10)
        self.consortium.close()


def advisory_offsets_match(stack: L2Stack, timeout: float = 30.0) -> bool:
    """Whether the batcher group's Kafka offsets (advisory) equal the positions
    stored in PostgreSQL for every partition, within ``timeout``."""
    with stack.connect() as conn:
        rows = conn.execute(
            "SELECT consumer, topic, partition, next_offset FROM l2.positions"
        ).fetchall()
    stored = {(str(t), int(p)): int(o) for _, t, p, o in rows if int(o) > 0}
    groups = {str(c) for c, _, _, _ in rows}
    if len(groups) != 1 or not stored:
        return False
    (group,) = groups
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in stored])
    deadline = time.monotonic() + timeout
    while True:
        result = admin.list_consumer_group_offsets([request])[group].result(10)
        committed = {
            (tp.topic, tp.partition): tp.offset for tp in result.topic_partitions if tp.offset >= 0
        }
        if committed == stored:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
