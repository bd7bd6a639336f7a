"""The validator process: Kafka I/O around :class:`ledger.validator_core.ValidatorCore`.

One process per operator (``pantheon validator --institution X --operator N``). It reads
``pantheon.tx`` and ``pantheon.votes`` with a manually assigned consumer (positions come
from its own snapshot, never from Kafka's committed offsets, which only mirror them for
Kafka's lag tools), hands every message to the
core and carries out the actions the core returns:

* votes are first journaled (fsync) and then produced: a restarted validator never signs
  two different hashes for one height (``streams.durable.VoteJournal``);
* final blocks and receipts are produced to ``pantheon.blocks`` and ``pantheon.receipts``;
* markers and evidence transactions go to ``pantheon.tx``;
* one operator of the consortium publishes each final block (D47): every other one reads
  ``pantheon.blocks`` (from a little before its end) and holds each final block until a copy
  with the same bytes is there, or takes over; copies are labelled with their producer's
  operator key id (header ``pantheon-operator``; D38).

Every few final blocks (or seconds) the producer is flushed and the final state is
snapshotted, then the journal is pruned. On restart the newest valid snapshot is loaded and
the logs are replayed from the positions it names. SIGTERM stops it cleanly (exit 0); a
divergence stops it loudly (exit 3); bad configuration exits 2; a message the producer
could not deliver (a fatal producer error: sends otherwise retry until the brokers return)
exits 4.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from ledger.errors import LedgerError
from ledger.execution import LedgerMachine
from ledger.genesis import Genesis, genesis_state
from ledger.keys import KeyPair
from ledger.publication import PublishFinal
from ledger.snapshot import SnapshotEncoder
from ledger.validator_core import (
    Action,
    Diverged,
    EmitMarker,
    SendVote,
    SubmitTx,
    ValidatorCore,
)
from runtime import logs
from runtime.cli_args import ConfigError
from runtime.heap import GcPauses, HeapSettler
from runtime.kafka_config import consume_ready, consumer_config, producer_config
from streams import validator_metrics as metrics
from streams.durable import SnapshotStore, VoteJournal, atomic_write
from streams.signature_pipeline import SignaturePipeline

log = logging.getLogger("pantheon.validator")

EXIT_OK, EXIT_CONFIG, EXIT_DIVERGED, EXIT_UNDELIVERED = 0, 2, 3, 4
PUBLISHER_HEADER = "pantheon-operator"
"""Kafka header naming the operator key id that produced a FinalizedBlock copy (D38)."""
SNAPSHOT_EVERY_BLOCKS = 200
COPIES_LOOKBACK = 2 * SNAPSHOT_EVERY_BLOCKS
"""Block copies read before the blocks topic's end when a validator starts watching it: a
restarted validator replays up to :data:`SNAPSHOT_EVERY_BLOCKS` heights since its snapshot
and must see that they were published (D47)."""
SNAPSHOT_EVERY_SECONDS = 15.0
SNAPSHOT_SLICE_SECONDS = 0.002
"""Loop time per turn spent encoding a snapshot (D40)."""
ADVISE_SECONDS = 5.0
"""How often positions are mirrored as Kafka group offsets (advisory, D36)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidatorConfig:
    """Everything a validator process needs to know."""

    genesis: Path
    keystore: Path
    institution: str
    operator: int
    bootstrap: str
    prefix: str
    state_dir: Path
    metrics_port: int | None = None
    verify_workers: int = 0


def load_operator(keystore: Path, institution: str, index: int) -> KeyPair:
    """The operator key ``index`` of ``institution`` from its keystore file."""
    try:
        doc = json.loads(keystore.read_text())
        if doc["institution_id"] != institution:
            raise ConfigError(f"{keystore} belongs to {doc['institution_id']}, not {institution}")
        seed = bytes.fromhex(doc["operators"][index]["seed"])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"cannot read operator {index} from {keystore}: {exc}") from exc
    return KeyPair.from_seed(seed)


class Validator:
    """The process: consumer, producer, core, durable state, status file."""

    def __init__(self, config: ValidatorConfig) -> None:
        self.config = config
        try:
            self.genesis = Genesis.decode(config.genesis.read_bytes())
        except (OSError, LedgerError) as exc:
            raise ConfigError(f"cannot read genesis {config.genesis}: {exc}") from exc
        self.operator = load_operator(config.keystore, config.institution, config.operator)
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.journal = VoteJournal(config.state_dir / "votes.journal")
        self.snapshots = SnapshotStore(config.state_dir / "snapshots")
        self.topics = {
            name: f"{config.prefix}{name}" for name in ("tx", "votes", "blocks", "receipts")
        }
        self.core, votes_offset = self._resume()
        self.running = True
        self.labels = {"institution": config.institution, "operator": str(config.operator)}
        self._cut_gauge = metrics.CUT_HEIGHT.labels(**self.labels)
        self._cut_shown = -1
        self._last_snapshot = (self.core.final_height, time.monotonic())
        self._votes_position = votes_offset
        self._tx_high = -1
        self._tx_appended_ms = 0  # broker append time of the newest tx message read
        self._tx_position = self.core.final.next_tx_offset
        self._last_watermark = 0.0
        self._last_status = 0.0
        self._last_advice = 0.0
        self._watching_blocks = False  # reading pantheon.blocks for peers' copies (D38)
        # The default long fetch wait (an idle consumer asks twice a second): _caught_up
        # reads the end of the tx log cached from fetch responses, so no watermark query
        # queues behind a parked fetch (which is why the wait was 20 ms: 50 fetches a second
        # per validator, broker CPU whatever the load, D47).
        self.consumer = Consumer(
            consumer_config(config.bootstrap, f"validator-{config.institution}-{config.operator}")
        )
        self.consumer.assign(
            [
                TopicPartition(self.topics["tx"], 0, self.core.final.next_tx_offset),
                TopicPartition(self.topics["votes"], 0, votes_offset),
            ]
        )
        # Votes, blocks and receipts are mostly hashes and signatures: compressing them costs
        # the producer and the broker CPU and saves nothing. A vote or a marker is sent once,
        # so it must never expire in the producer's queue while the brokers are away
        # (message.timeout.ms 0 = retry until delivered, in order, idempotently); a message
        # that still fails (a fatal producer error) stops the process, and a restart
        # re-executes and re-sends what is not final.
        self.undelivered: str | None = None
        # Signatures verified ahead in worker processes (D18), started through a fork server
        # (never a fork of this process, which already runs librdkafka's threads).
        self.pipeline: SignaturePipeline | None = None
        self._heap = HeapSettler()  # no full collection over the world state (runtime.heap)
        self._gc = GcPauses()
        # Snapshots are encoded a slice per loop turn and fsynced in a thread of their own:
        # at once, a 10,000 record state took 1.1 to 1.2 s of the loop and stalled every
        # validator at about the same moment (same heights): the largest swing of the p99
        # finality latency (D40).
        self._snapshot_thread = ThreadPoolExecutor(1, thread_name_prefix="snapshot")
        self._snapshot_job: tuple[Future[float], int] | None = None
        self._encoding: SnapshotEncoder | None = None
        self._snapshot_began = 0.0
        self._snapshot_stall_ms = 0.0  # the longest the loop spent on a snapshot
        self._snapshot_write_ms = 0.0  # the longest a snapshot took from begun to stored
        if config.verify_workers > 0:
            self.pipeline = SignaturePipeline(self._on_tx, config.verify_workers, chunk=1000)
        self.producer = Producer(
            producer_config(
                config.bootstrap,
                **{
                    "linger.ms": 2,
                    "compression.type": "none",
                    "message.timeout.ms": 0,
                    "on_delivery": self._delivered,
                },
            )
        )

    def _resume(self) -> tuple[ValidatorCore, int]:
        loaded = self.snapshots.load_latest(self.genesis.params.chain_id)
        if loaded is None:
            machine = LedgerMachine(self.genesis)
            core = ValidatorCore(
                machine=machine, final_state=genesis_state(self.genesis), operator=self.operator
            )
            log.info("starting from genesis", extra={"genesis": self.genesis.hash().hex()})
            return core, 0
        state, meta = loaded
        final_state = self.snapshots.load_latest(meta.chain_id)
        assert final_state is not None  # same file, a second independent copy of the state
        machine = LedgerMachine.resume(self.genesis, state, meta.block_hash)
        core = ValidatorCore(
            machine=machine,
            final_state=final_state[0],
            operator=self.operator,
            next_tx_offset=meta.tx_offset,
        )
        log.info(
            "resuming from snapshot",
            extra={
                "height": meta.height,
                "tx_offset": meta.tx_offset,
                "votes_offset": meta.votes_offset,
            },
        )
        return core, meta.votes_offset

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> int:
        """Process the logs until stopped; returns the exit code."""
        if self.config.metrics_port is not None:
            metrics.serve(self.config.metrics_port)
        for counter in (metrics.DIVERGENCES, metrics.EQUIVOCATIONS, metrics.VOTES, metrics.MARKERS):
            counter.labels(**self.labels).inc(0)  # exported from the start, at 0
        try:
            while self.running:
                busy = self.pipeline is not None and self.pipeline.pending > 0
                # what is fetched at once, else the first message to come (consume_ready):
                # consume(1000, t) waited all of t under a trickle, on every turn (D40)
                batch = consume_ready(self.consumer, 1000, 0.005 if busy else 0.05)
                for msg in batch:
                    self._on_message(msg)
                    if self.core.diverged is not None:
                        break
                if self.pipeline is not None:
                    self.pipeline.poll(0.0 if batch else 0.01)
                self._perform(self.core.on_tick(_now_ms(), caught_up=self._caught_up()))
                if not self._watching_blocks and not self.core.publishing:
                    self._watch_blocks()
                self.producer.poll(0)
                if self.core.diverged is not None:
                    self._write_status()
                    return EXIT_DIVERGED
                if self.undelivered is not None:
                    log.critical(
                        "a message could not be delivered; exiting so that a restart re-sends it",
                        extra={"error": self.undelivered},
                    )
                    return EXIT_UNDELIVERED
                self._maybe_snapshot()
                self._maybe_write_status()
                self._heap.settle()
            return EXIT_OK
        finally:
            if self.pipeline is not None:
                self.pipeline.close()
            self._snapshot_thread.shutdown(wait=True)
            self._finish_snapshot()
            self.producer.flush(30)
            self._write_status()
            self.consumer.close()
            self.journal.close()

    def _delivered(self, error: KafkaError | None, _msg: Message) -> None:
        if error is not None and self.undelivered is None:
            self.undelivered = str(error)

    def stop(self, *_: object) -> None:
        """Ask the loop to end (signal handler)."""
        self.running = False

    def _on_message(self, msg: Message) -> None:
        error = msg.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error", extra={"error": str(error)})
            return
        offset = msg.offset()
        value = msg.value() or b""
        assert offset is not None
        topic = msg.topic()
        if topic == self.topics["tx"]:
            _, ts = msg.timestamp()
            if self.pipeline is not None:
                self.pipeline.add(offset, ts, value)
            else:
                self._on_tx(offset, ts, value, False)
        elif topic == self.topics["votes"]:
            self._votes_position = offset + 1
            self._perform(self.core.on_vote(offset, value))
        else:
            self._on_copy(msg)

    def _watch_blocks(self) -> None:
        """Start reading the blocks topic, :data:`COPIES_LOOKBACK` copies before its end: the
        copies tell this operator which of its final blocks are published (D47)."""
        blocks = TopicPartition(self.topics["blocks"], 0)
        try:
            low, high = self.consumer.get_watermark_offsets(blocks, timeout=5)
        except KafkaException as exc:  # a broker hiccup: try again next turn
            log.warning("blocks watermark query failed", extra={"error": str(exc)})
            return
        self._watching_blocks = True
        start = max(low, high - COPIES_LOOKBACK)
        self.consumer.incremental_assign([TopicPartition(self.topics["blocks"], 0, start)])
        log.info(
            "reading block copies of other operators",
            extra={"publisher_rank": self.core.publisher_rank, "from": start},
        )

    def _on_copy(self, msg: Message) -> None:
        publisher = dict(msg.headers() or []).get(PUBLISHER_HEADER)
        try:
            height = int(msg.key() or b"")
        except ValueError:
            return
        label = publisher if isinstance(publisher, bytes) else b""  # bytes decide, not labels
        self._perform(self.core.on_published(height, label, msg.value() or b""))

    def _on_tx(self, offset: int, timestamp_ms: int, raw: bytes, verified: bool) -> None:
        if self.core.diverged is not None:  # the loop stops; what is in flight is dropped
            return
        self._tx_position = offset + 1
        self._tx_appended_ms = timestamp_ms
        self._perform(self.core.on_tx(offset, timestamp_ms, raw, signature_verified=verified))
        if self.core.cut_height != self._cut_shown:  # once per block, not per message
            self._cut_shown = self.core.cut_height
            self._cut_gauge.set(self._cut_shown)

    def _perform(self, actions: Sequence[Action]) -> None:
        for action in actions:
            if isinstance(action, SendVote):
                self._send_vote(action)
            elif isinstance(action, PublishFinal):
                self._publish(action)
            elif isinstance(action, EmitMarker):
                self.producer.produce(self.topics["tx"], key=self.operator.key_id, value=action.raw)
                metrics.MARKERS.labels(**self.labels).inc()
            elif isinstance(action, SubmitTx):
                log.warning("submitting evidence", extra={"reason": action.reason})
                metrics.EQUIVOCATIONS.labels(**self.labels).inc()
                self.producer.produce(self.topics["tx"], key=self.operator.key_id, value=action.raw)
            elif isinstance(action, Diverged):
                self._diverged(action)

    def _send_vote(self, vote: SendVote) -> None:
        if not self.journal.allow(vote.height, vote.block_hash):
            log.critical(
                "refusing to sign a second hash for a height already signed",
                extra={"height": vote.height, "hash": vote.block_hash.hex()},
            )
            self.core.diverged = Diverged(
                vote.height, vote.block_hash, self.journal.signed[vote.height]
            )
            self._diverged(self.core.diverged)
            return
        self.producer.produce(self.topics["votes"], key=str(vote.height).encode(), value=vote.raw)
        metrics.VOTED_HEIGHT.labels(**self.labels).set(vote.height)
        metrics.VOTES.labels(**self.labels).inc()

    def _publish(self, final: PublishFinal) -> None:
        key = str(final.height).encode()
        self.producer.produce(
            self.topics["blocks"],
            key=key,
            value=final.block,
            headers=[(PUBLISHER_HEADER, self.operator.key_id)],
        )
        for n, (tx_id, raw) in enumerate(final.receipts):
            self.producer.produce(self.topics["receipts"], key=tx_id, value=raw)
            if n % 256 == 255:  # serve delivery reports now and then, not per message
                self.producer.poll(0)
        self.producer.poll(0)
        metrics.FINAL_HEIGHT.labels(**self.labels).set(final.height)
        metrics.FINALITY_LATENCY.labels(**self.labels).observe(
            max(0.0, (_now_ms() - final.timestamp_ms) / 1000.0)
        )
        for code, count in Counter(final.codes).items():
            metrics.TXS.labels(result=code.name, **self.labels).inc(count)

    def _diverged(self, event: Diverged) -> None:
        metrics.DIVERGENCES.labels(**self.labels).inc()
        log.critical(
            "DIVERGED: this validator's block hash differs from the final one; it stops "
            "voting and exits (its state or code is wrong: compare with `pantheon audit`)",
            extra={
                "height": event.height,
                "own_hash": event.own_hash.hex(),
                "final_hash": event.final_hash.hex(),
            },
        )

    # -- bookkeeping ---------------------------------------------------------------------
    def _caught_up(self) -> bool:
        """Whether this validator reads the tx log live, not history (markers are only
        emitted then): the newest message it read was appended (broker clock) less than a
        block interval ago, or it has read the whole log. Under a steady stream the log's end
        moves on during every watermark query, so "read the whole log" alone was rarely true
        and blocks were cut mostly by size (about one a second at 400 tx/s)."""
        if self.core.cutter.oldest_pending_ms is None:
            return False
        if _now_ms() - self._tx_appended_ms < self.core.block_interval_ms:
            return True
        tx = TopicPartition(self.topics["tx"], 0)
        # the end of the log as the last fetch response gave it (no request; D47)
        _, high = self.consumer.get_watermark_offsets(tx, cached=True)
        if high < 0:  # no fetch response yet: ask, now and then
            now = time.monotonic()
            if now - self._last_watermark < 0.5:
                return False
            self._last_watermark = now
            try:
                _, high = self.consumer.get_watermark_offsets(tx, timeout=2)
            except Exception as exc:  # a broker hiccup: try again later, do not cut
                log.warning("watermark query failed", extra={"error": str(exc)})
                return False
        self._tx_high = high
        return self._tx_position >= self._tx_high

    def _reading_live(self) -> bool:
        """What ``pantheon status`` shows as caught up: the newest tx message read was
        appended less than a block interval ago, or the end of the log as last queried
        (:meth:`_caught_up` refreshes that end) is reached."""
        recent = _now_ms() - self._tx_appended_ms < self.core.block_interval_ms
        return recent or self._tx_position >= self._tx_high

    def _maybe_snapshot(self) -> None:
        if self._snapshot_job is not None:
            if not self._snapshot_job[0].done():
                return
            self._finish_snapshot()
        if self._encoding is not None:
            self._encode_some()
            return
        height, when = self._last_snapshot
        final = self.core.final_height
        due = final - height >= SNAPSHOT_EVERY_BLOCKS or (
            final > height and time.monotonic() - when >= SNAPSHOT_EVERY_SECONDS
        )
        if not due:
            return
        began = time.perf_counter()
        # what the snapshot says was published must be delivered before it can be loaded
        if self.producer.flush(30) > 0:
            log.warning("producer did not drain; snapshot postponed")
            return
        meta = self.core.snapshot_meta(self._votes_position)
        self._encoding = SnapshotEncoder(self.core.final.final_state.copy(), meta)
        self._last_snapshot = (final, time.monotonic())
        self._snapshot_began = time.perf_counter()
        stall_ms = (time.perf_counter() - began) * 1000
        self._snapshot_stall_ms = max(self._snapshot_stall_ms, stall_ms)

    def _encode_some(self) -> None:
        """Encode the snapshot for about :data:`SNAPSHOT_SLICE_SECONDS` of this turn (in a
        thread, the encoding held the GIL for hundreds of milliseconds and every blocking
        call of the loop waited for it); once encoded, a thread writes and fsyncs it."""
        assert self._encoding is not None
        began = time.perf_counter()
        while time.perf_counter() - began < SNAPSHOT_SLICE_SECONDS:
            raw = self._encoding.step(32)
            if raw is not None:
                height = self._encoding.meta.height
                self._encoding = None
                job = self._snapshot_thread.submit(self._write_snapshot, height, raw)
                self._snapshot_job = (job, height)
                return

    def _write_snapshot(self, height: int, raw: bytes) -> float:
        """Store a snapshot (in the snapshot thread); returns the milliseconds since the
        snapshot was begun."""
        self.snapshots.save_encoded(height, raw)
        return (time.perf_counter() - self._snapshot_began) * 1000

    def _finish_snapshot(self) -> None:
        """After a snapshot was written: prune the journal below it (on the loop's thread,
        which appends to the journal)."""
        if self._snapshot_job is None:
            return
        job, final = self._snapshot_job
        self._snapshot_job = None
        try:
            spent_ms = job.result()
        except Exception as exc:  # a full disk: keep the journal, try again when due
            log.warning("snapshot failed", extra={"height": final, "error": str(exc)})
            return
        self.journal.prune_below(final + 1)
        self._snapshot_write_ms = max(self._snapshot_write_ms, spent_ms)
        log.info("snapshot", extra={"height": final, "ms": round(spent_ms, 1)})

    def _maybe_write_status(self) -> None:
        if time.monotonic() - self._last_status >= 0.5:
            self._write_status()
        if time.monotonic() - self._last_advice >= ADVISE_SECONDS:
            self._advise()

    def _advise(self) -> None:
        """Mirror the finalized tx position and the votes position as the group's Kafka
        offsets, for Kafka's own lag tools only: positions come from snapshots, nothing reads
        these back, and a failed commit changes nothing."""
        self._last_advice = time.monotonic()
        offsets = [
            TopicPartition(self.topics["tx"], 0, self.core.final.next_tx_offset),
            TopicPartition(self.topics["votes"], 0, self._votes_position),
        ]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            log.debug("advisory offsets not committed", extra={"error": str(exc)})

    def _write_status(self) -> None:
        self._last_status = time.monotonic()
        status: dict[str, Any] = {
            "institution": self.config.institution,
            "operator": self.config.operator,
            "operator_key_id": self.operator.key_id.hex(),
            "cut_height": self.core.cut_height,
            "voted_height": self.core.voted_height,
            "final_height": self.core.final_height,
            "diverged": self.core.diverged is not None,
            "rank": self.core.rank,
            "publisher_rank": self.core.publisher_rank,
            "publishing": self.core.publishing,
            "following": self.core.following,
            "caught_up": self._reading_live(),
            "gc": self._gc.summary(),
            "snapshot_stall_ms_max": round(self._snapshot_stall_ms, 2),
            "snapshot_write_ms_max": round(self._snapshot_write_ms, 2),
            "pid": os.getpid(),
            "updated_ms": _now_ms(),
        }
        atomic_write(self.config.state_dir / "status.json", json.dumps(status).encode())


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def build_parser(*, add_help: bool = True) -> argparse.ArgumentParser:
    """Arguments of ``pantheon validator`` / ``python -m streams.validator``."""
    p = argparse.ArgumentParser(
        prog="pantheon validator",
        description="run one operator's validator process",
        add_help=add_help,
    )
    p.add_argument("--genesis", required=True, type=Path, help="genesis.avro of the chain")
    p.add_argument("--keystore", required=True, type=Path, help="the institution's key file")
    p.add_argument("--institution", required=True, help="institution id")
    p.add_argument("--operator", type=int, default=0, help="operator index in the keystore")
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    p.add_argument("--prefix", default="pantheon.", help="topic prefix")
    p.add_argument("--state-dir", required=True, type=Path, help="snapshots, journal, status")
    p.add_argument("--metrics-port", type=int, default=None, help="serve /metrics here")
    p.add_argument(
        "--verify-workers",
        type=int,
        default=0,
        help="verify transaction signatures ahead in N worker processes (for a host with "
        "cores to spare; 0 = verify in the validator, the default)",
    )
    if add_help:
        p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return p


def config_from_args(args: argparse.Namespace) -> ValidatorConfig:
    """A config from parsed arguments."""
    return ValidatorConfig(
        genesis=args.genesis,
        keystore=args.keystore,
        institution=args.institution,
        operator=args.operator,
        bootstrap=args.bootstrap,
        prefix=args.prefix,
        state_dir=args.state_dir,
        metrics_port=args.metrics_port,
        verify_workers=args.verify_workers,
    )


def run(config: ValidatorConfig) -> int:
    """Run a validator until SIGTERM/SIGINT; returns the process exit code."""
    try:
        validator = Validator(config)
    except ConfigError as exc:
        log.error("cannot start validator", extra={"error": str(exc)})
        print(f"pantheon validator: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        validator.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return validator.run()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m streams.validator``."""
    args = build_parser().parse_args(argv)
    logs.configure(verbose=args.verbose)
    return run(config_from_args(args))


if __name__ == "__main__":
    sys.exit(main())
