"""The validator process: Kafka I/O around :class:`ledger.validator_core.ValidatorCore`.

One process per operator (``pantheon validator --institution X --operator N``). It reads
``pantheon.tx`` and ``pantheon.votes`` with a manually assigned consumer (positions come
from its own snapshot, never from Kafka's committed offsets, which only mirror them for
Kafka's lag tools), hands every message to the core and carries out its actions:

* votes are first journaled (fsync) and then produced: a restarted validator never signs
  two different hashes for one height (``streams.durable.VoteJournal``);
* final blocks and receipts are produced to ``pantheon.blocks`` and ``pantheon.receipts``;
* markers and evidence transactions go to ``pantheon.tx``;
* one operator of the consortium publishes each final block (D47): every other one reads
  ``pantheon.blocks`` (from a little before its end) and holds each final block until a copy
  with the same bytes is there, or takes over; copies are labelled with their producer's
  operator key id (header ``pantheon-operator``; D38);
* a primary sends each block it executes to ``pantheon.feeds``; its standbys read that topic
  and apply final blocks from it rather than executing them (D52), and do not read
  ``pantheon.tx`` while they follow (``streams.validator_txlog``, D57); they read the votes,
  blocks and feeds on a patient second consumer meanwhile (``streams.validator_reads``, D64).

Snapshots: ``streams.validator_snapshots``; on restart the newest valid one is loaded and
the logs are replayed from the positions it names. SIGTERM stops it cleanly (exit 0); a
divergence stops it loudly (exit 3); bad configuration exits 2; a message the producer
could not deliver (a fatal producer error: sends otherwise retry until the brokers return)
exits 4.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from types import FrameType
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from ledger.errors import LedgerError
from ledger.execution import LedgerMachine
from ledger.genesis import Genesis, genesis_state
from ledger.publication import PublishFinal
from ledger.validator_core import (
    Action,
    Diverged,
    EmitMarker,
    SendFeed,
    SendVote,
    SubmitTx,
    ValidatorCore,
)
from runtime import logs
from runtime.cli_args import ConfigError
from runtime.heap import GcPauses, HeapSettler
from runtime.kafka_config import consumer_config, producer_config
from runtime.startup import refuse, require_broker
from streams import validator_metrics as metrics
from streams.durable import SnapshotStore, VoteJournal
from streams.signature_pipeline import SignaturePipeline
from streams.validator_config import ValidatorConfig, build_parser, config_from_args, load_operator
from streams.validator_reads import PATIENT, Reads
from streams.validator_snapshots import SNAPSHOT_EVERY_BLOCKS, Snapshotter
from streams.validator_status import core_status, report_divergence, run_profiled, write_status
from streams.validator_txlog import TxRead

log = logging.getLogger("pantheon.validator")

EXIT_OK, EXIT_CONFIG, EXIT_DIVERGED, EXIT_UNDELIVERED = 0, 2, 3, 4
PUBLISHER_HEADER = "pantheon-operator"
"""Kafka header naming the operator key id that produced a FinalizedBlock copy (D38)."""
COPIES_LOOKBACK = 2 * SNAPSHOT_EVERY_BLOCKS
"""Block copies read before the blocks topic's end when a validator starts watching it: a
restarted validator replays up to :data:`SNAPSHOT_EVERY_BLOCKS` heights since its snapshot
and must see that they were published (D47)."""
ADVISE_SECONDS = 5.0
"""How often positions are mirrored as Kafka group offsets (advisory, D36)."""


class Validator:
    """The process: consumer, producer, core, durable state, status file."""

    def __init__(self, config: ValidatorConfig) -> None:
        self.config = config
        try:
            self.genesis = Genesis.decode(config.genesis.read_bytes())
        except (OSError, LedgerError) as exc:
            raise ConfigError(f"cannot read genesis {config.genesis}: {exc}") from exc
        self.operator = load_operator(config.keystore, config.institution, config.operator)
        require_broker(config.bootstrap)  # one line now, rather than waiting for it forever
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.journal = VoteJournal(config.state_dir / "votes.journal")
        self.snapshots = SnapshotStore(config.state_dir / "snapshots")
        self.topics = {
            name: f"{config.prefix}{name}"
            for name in ("tx", "votes", "blocks", "receipts", "feeds")
        }
        self.core, votes_offset = self._resume()
        self.running = True
        self.labels = {"institution": config.institution, "operator": str(config.operator)}
        self._cut_gauge = metrics.CUT_HEIGHT.labels(**self.labels)
        self._cut_shown = -1
        self._votes_position = votes_offset
        self._last_status = 0.0
        self._last_advice = 0.0
        self._watching_blocks = False  # reading pantheon.blocks for peers' copies (D38)
        self._watching_feeds = False  # a standby reads its primary's feeds (D52)
        # The default long fetch wait (an idle consumer asks twice a second): _caught_up
        # reads the end of the tx log cached from fetch responses, so no watermark query
        # queues behind a parked fetch (which is why the wait was 20 ms: 50 fetches a second
        # per validator, broker CPU whatever the load, D47).
        group = f"validator-{config.institution}-{config.operator}"
        self.consumer = Consumer(consumer_config(config.bootstrap, group))
        # votes, blocks and feeds: read patiently while the core follows (D64)
        self.reads = Reads(
            self.consumer, lambda: Consumer(consumer_config(config.bootstrap, group, **PATIENT))
        )
        self.reads.assign(self.topics["votes"], votes_offset)
        self.tx = TxRead(  # assigned in the loop, if the core reads it (D57)
            self.consumer,
            self.topics["tx"],
            self.core.final.next_tx_offset,
            self.core.block_interval_ms,
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
        self.snapshots_due = Snapshotter(self.snapshots, self.journal, self.core.final_height)
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
        metrics.export_zeroes(self.labels)  # every series from the start, at 0
        try:
            while self.running:
                busy = self.pipeline is not None and self.pipeline.pending > 0
                self.reads.follow(self.core.following)
                # what is fetched at once, else the first message to come (consume_ready:
                # consume(1000, t) waited all of t under a trickle, on every turn, D40)
                batch = self.reads.consume(1000, 0.005 if busy else 0.05)
                for source, msg in batch:
                    if self.reads.wanted(source, msg):
                        self._on_message(msg)
                    if self.core.diverged is not None:
                        break
                if self.pipeline is not None:
                    self.pipeline.poll(0.0 if batch else 0.01)
                else:  # the pending block's signatures, before its cut (D73)
                    self.core.verify_ahead()
                self._perform(self.core.on_tick(_now_ms(), caught_up=self.tx.caught_up(self.core)))
                self.tx.sync(self.core, self.pipeline)
                if not self._watching_blocks and not self.core.publishing:
                    self._watching_blocks = self._watch("blocks")
                if not self._watching_feeds and self.core.rank > 0:
                    self._watching_feeds = self._watch("feeds")
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
                self.snapshots_due.maybe(self.core, self.producer, self._votes_position)
                self._maybe_write_status()
                self._heap.settle()
            return EXIT_OK
        finally:
            if self.pipeline is not None:
                self.pipeline.close()
            self.snapshots_due.close()
            self.producer.flush(30)
            self._write_status()
            self.reads.close()
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
        elif topic == self.topics["feeds"]:
            self._perform(self.core.on_feed(msg.key() or b"", value))
        else:
            self._on_copy(msg)

    def _watch(self, name: str) -> bool:
        """Start reading topic ``name`` (blocks: which final blocks are published, D47;
        feeds: D52) :data:`COPIES_LOOKBACK` messages before its end; False on a failure."""
        topic = TopicPartition(self.topics[name], 0)
        try:
            low, high = self.consumer.get_watermark_offsets(topic, timeout=5)
        except KafkaException as exc:  # a broker hiccup: try again next turn
            log.warning("watermark query failed", extra={"topic": name, "error": str(exc)})
            return False
        start = max(low, high - COPIES_LOOKBACK)
        self.reads.assign(self.topics[name], start)
        log.info(
            f"reading {name} of other operators",
            extra={"publisher_rank": self.core.publisher_rank, "from": start},
        )
        return True

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
        self.tx.read(offset, timestamp_ms)
        self._perform(self.core.on_tx(offset, timestamp_ms, raw, signature_verified=verified))
        if self.core.cut_height != self._cut_shown:  # once per block, not per message
            self._cut_shown = self.core.cut_height
            self._cut_gauge.set(self._cut_shown)

    def _perform(self, actions: Sequence[Action]) -> None:
        for action in actions:
            if isinstance(action, SendVote):
                self._send_vote(action)
            elif isinstance(action, SendFeed):
                self.producer.produce(
                    self.topics["feeds"], key=self.operator.key_id, value=action.raw
                )
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
        report_divergence(event, self.labels)

    # -- bookkeeping ---------------------------------------------------------------------
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
            **core_status(self.core),
            "caught_up": self.tx.live(),
            "reads_tx": self.tx.reading,
            "tx_messages_read": self.tx.messages,
            "tx_read_from": self.tx.started_from,
            "patient_reads": self.reads.following,
            "gc": self._gc.summary(),
            "snapshot_stall_ms_max": round(self.snapshots_due.stall_ms, 2),
            "snapshot_write_ms_max": round(self.snapshots_due.write_ms, 2),
        }
        write_status(self.config.state_dir, status)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def run(config: ValidatorConfig) -> int:
    """Run a validator until SIGTERM/SIGINT; returns the process exit code."""
    try:
        validator = Validator(config)
    except ConfigError as exc:  # one line on stderr (a log line too would say it twice)
        return refuse("validator", exc)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        validator.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return run_profiled(  # PANTHEON_VALIDATOR_PROFILE_DIR set: under cProfile
        validator.run,
        lambda: f"{config.institution}-{config.operator}-rank{validator.core.rank}.prof",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m streams.validator``."""
    args = build_parser().parse_args(argv)
    logs.configure(verbose=args.verbose)
    return run(config_from_args(args))


if __name__ == "__main__":
    sys.exit(main())
