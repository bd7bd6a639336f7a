"""Verified transaction outcomes, read from ``<prefix>blocks`` by a background thread.

Theory of operation
-------------------
* Every validator publishes the same ``FinalizedBlock`` (header, quorum certificate, entry
  results) for every final height, at the moment it publishes the height's receipts.
  :class:`ReceiptWatcher` reads partition 0 of the blocks topic with a manually assigned
  consumer (no consumer group commits) from a start offset: by default the topic's end when
  the watcher is created (resolved right away, so a block produced after the constructor
  returns is never missed), or 0 with ``from_beginning=True``, or any ``start_offset``.
* Each copy is verified with the pure core (:class:`ledger.outcomes.OutcomeVerifier`) against
  the validator set of its height, established from the genesis (and, after membership
  changes, from candidate sets of an untrusted ``validator_sets`` source that must hash to the
  header's set and be vouched for by the set established for that height; each set verifies
  only its window of heights: see :mod:`ledger.outcomes`).
  The first verifying copy of a height wins; identical later copies are counted in
  :attr:`~ReceiptWatcher.duplicates`. A copy that does not verify is logged, counted in
  :attr:`~ReceiptWatcher.forged` (bad certificate or results), :attr:`~ReceiptWatcher.
  unverifiable` (a validator set the watcher cannot establish) or
  :attr:`~ReceiptWatcher.malformed`, and ignored: it is never an outcome.
* A :class:`Receipt` is built from the certified entry: the FIRST certified outcome per tx id
  is kept (a replayed envelope appears again later with ``BAD_NONCE``).
* The unsigned ``<prefix>receipts`` topic is never an outcome. With ``check_receipts=True``
  the watcher also reads it, compares every receipt with the certified outcome of its tx
  (when that arrives), and logs and counts contradicting ones in
  :attr:`~ReceiptWatcher.forged_receipts` (a monitor; ``pantheon audit`` checks them all).
* :meth:`ReceiptWatcher.wait` blocks on a condition until the verified outcome arrives, or
  raises :class:`ReceiptTimeout` -- :class:`OutcomeUnverifiable`, a subclass, when the tx was
  seen only in copies whose validator set could not be established. If the reading thread
  dies, waiters get :class:`SdkError`.
* Reading uses :func:`~runtime.kafka_config.consume_ready`: an outcome is handled as soon as
  its block arrives (``Consumer.consume(500, 0.1)``, what the receipt watcher used, waited up
  to 100 ms for a batch to fill under a trickle).
* Memory is bounded: at most ``max_entries`` (default 100,000) outcomes are kept; beyond
  that the oldest ones that no thread is waiting for are forgotten. A caller that waits
  for an outcome long after it was published must start a new watcher at an earlier offset,
  or read the projections.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from ledger.blocks import decode_finalized, peek_height
from ledger.errors import DecodeError, ProofError
from ledger.genesis import Genesis
from ledger.hashing import HASH_BYTES
from ledger.outcomes import CannotVerify, CertifiedBlock, OutcomeVerifier, SetSource
from ledger.results import ResultCode
from runtime.kafka_config import consume_ready, consumer_config, error_text
from runtime.topics import DEFAULT_PREFIX
from schemas.codec import decode
from schemas.errors import CodecError

log = logging.getLogger("pantheon.sdk")

DEFAULT_MAX_ENTRIES = 100_000
WON_HEIGHTS = 4096  # heights whose winning copy is remembered (to tell duplicates from forgeries)
_BATCH = 500
_POLL_SECONDS = 0.1


class SdkError(Exception):
    """Base class of the client SDK's errors."""


class ReceiptTimeout(SdkError, TimeoutError):
    """No verified outcome for ``tx_id`` arrived within ``timeout`` seconds."""

    def __init__(self, tx_id: bytes, timeout: float, detail: str = "") -> None:
        super().__init__(f"no verified outcome for tx {tx_id.hex()} within {timeout:g}s{detail}")
        self.tx_id = tx_id
        self.timeout = timeout


class OutcomeUnverifiable(ReceiptTimeout):
    """The tx appeared only in blocks certified by a validator set the client cannot
    establish (:class:`ledger.outcomes.CannotVerify`): its outcome is unknown, not refused."""

    def __init__(self, tx_id: bytes, timeout: float, reason: str) -> None:
        super().__init__(tx_id, timeout, f"; seen only in unverifiable blocks: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt:
    """The outcome of a transaction: in block ``height`` at ``offset`` of the tx topic."""

    tx_id: bytes
    height: int
    offset: int
    code: ResultCode
    block_hash: bytes

    @property
    def accepted(self) -> bool:
        """True if the transaction was applied (``ResultCode.OK``)."""
        return self.code.accepted

    @classmethod
    def decode(cls, raw: bytes) -> Receipt:
        """Parse a ``pantheon.receipts`` message (an unsigned claim, never an outcome by
        itself); raises ``ValueError`` if it is not one."""
        try:
            _, record = decode(raw, "Receipt")
            receipt = cls(
                tx_id=record["tx_id"],
                height=record["height"],
                offset=record["offset"],
                code=ResultCode(record["result_code"]),
                block_hash=record["block_hash"],
            )
        except CodecError as exc:
            raise ValueError(str(exc)) from exc
        if len(receipt.tx_id) != HASH_BYTES or len(receipt.block_hash) != HASH_BYTES:
            raise ValueError("tx id and block hash must be 32 bytes")
        if receipt.height < 0 or receipt.offset < 0:
            raise ValueError("height and offset must be non-negative")
        return receipt


def receipt_contradicts(claim: Receipt, certified: Receipt) -> bool:
    """Whether a receipt's claim contradicts the first certified outcome of its tx id.

    A later entry of the same tx id (a replayed envelope) is legitimately at a greater offset
    and height, and then only ``BAD_NONCE``; anything else that differs is a contradiction."""
    if claim == certified:
        return False
    later = claim.offset > certified.offset and claim.height >= certified.height
    return not (later and claim.code is ResultCode.BAD_NONCE)


class ReceiptWatcher:
    """A background reader of certified blocks; :meth:`wait` for one transaction's verified
    outcome (a :class:`Receipt`).

    Thread-safe: any number of threads may wait at once. Use as a context manager or call
    :meth:`close`.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        genesis: Genesis,
        prefix: str = DEFAULT_PREFIX,
        validator_sets: SetSource | None = None,
        start_offset: int | None = None,
        from_beginning: bool = False,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        consumer_overrides: dict[str, Any] | None = None,
        timeout: float = 10.0,
        check_receipts: bool = False,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.topic = f"{prefix}blocks"
        self.receipts_topic = f"{prefix}receipts"
        self.max_entries = max_entries
        self.verifier = OutcomeVerifier(genesis, validator_sets)
        self.malformed = 0
        self.duplicates = 0
        self.forged = 0
        self.unverifiable = 0
        self.conflicting = 0
        self.forged_receipts = 0
        self.receipts_checked = 0
        self.verified_height = 0
        self._receipts: OrderedDict[bytes, Receipt] = OrderedDict()
        self._won: OrderedDict[int, bytes] = OrderedDict()
        self._unverified: OrderedDict[bytes, str] = OrderedDict()
        self._claims: OrderedDict[bytes, list[Receipt]] = OrderedDict()
        self._waiting: dict[bytes, int] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        config = consumer_config(
            bootstrap,
            f"pantheon-sdk-outcomes-{uuid.uuid4().hex}",  # never joined: assign() only
            **{"enable.auto.offset.store": False, **(consumer_overrides or {})},
        )
        self._consumer = Consumer(config)
        try:
            partition = TopicPartition(self.topic, 0)
            if start_offset is None:
                start_offset = 0 if from_beginning else self._end_offset(partition, timeout)
            self.start_offset = start_offset
            assignment = [TopicPartition(self.topic, 0, start_offset)]
            if check_receipts:
                receipts = TopicPartition(self.receipts_topic, 0)
                at = 0 if from_beginning else self._end_offset(receipts, timeout)
                assignment.append(TopicPartition(self.receipts_topic, 0, at))
            self._consumer.assign(assignment)
        except KafkaException as exc:
            self._consumer.close()
            raise SdkError(f"cannot read {self.topic}: {error_text(exc)}") from exc
        self._position = start_offset
        self._thread = threading.Thread(
            target=self._run, name=f"outcomes-{self.topic}", daemon=True
        )
        self._thread.start()

    def _end_offset(self, partition: TopicPartition, timeout: float) -> int:
        # A fresh topic answers NOT_LEADER / UNKNOWN_TOPIC for a moment: retry until timeout.
        deadline = time.monotonic() + timeout
        while True:
            try:
                _, high = self._consumer.get_watermark_offsets(
                    partition, timeout=max(0.1, deadline - time.monotonic())
                )
                return high
            except KafkaException:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    # -- reading thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                messages = consume_ready(self._consumer, _BATCH, _POLL_SECONDS)
                if messages:
                    self._ingest(messages)
        except BaseException as exc:  # reported to every waiter instead of dying silently
            with self._cond:
                self._failure = exc
                self._cond.notify_all()
        finally:
            self._consumer.close()

    def _ingest(self, messages: list[Message]) -> None:
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                continue  # transient (e.g. partition EOF, broker down): librdkafka retries
            if msg.topic() == self.topic:
                self._block(msg.offset() or 0, msg.value() or b"")
            else:
                self._claim(msg.offset() or 0, msg.value() or b"")

    def _block(self, offset: int, raw: bytes) -> None:
        digest = hashlib.sha256(raw).digest()
        height = peek_height(raw)
        if height is not None and self._won.get(height) == digest:
            with self._cond:
                self.duplicates += 1
                self._position = offset + 1
            return
        try:
            block = self.verifier.verify(raw)
        except (DecodeError, ProofError) as exc:
            self._refused(offset, raw, height, exc)
            return
        if block.height in self._won:  # a second verifying copy with other bytes
            with self._cond:
                self.conflicting += 1
                self._position = offset + 1
            log.error(
                "a second certified copy with other bytes for one height",
                extra={"topic": self.topic, "offset": offset, "height": block.height},
            )
            return
        self._won[block.height] = digest
        while len(self._won) > WON_HEIGHTS:
            self._won.popitem(last=False)
        self._accept(offset, block)

    def _accept(self, offset: int, block: CertifiedBlock) -> None:
        with self._cond:
            self._position = offset + 1
            self.verified_height = max(self.verified_height, block.height)
            for outcome in block.outcomes():
                receipt = Receipt(
                    tx_id=outcome.tx_id,
                    height=outcome.height,
                    offset=outcome.offset,
                    code=outcome.code,
                    block_hash=outcome.block_hash,
                )
                if receipt.tx_id in self._receipts:
                    continue
                self._receipts[receipt.tx_id] = receipt
                self._unverified.pop(receipt.tx_id, None)
                for claim in self._claims.pop(receipt.tx_id, ()):
                    self._check_claim(claim, receipt)
            self._evict()
            self._cond.notify_all()

    def _refused(self, offset: int, raw: bytes, height: int | None, exc: Exception) -> None:
        kind = (
            "malformed"
            if isinstance(exc, DecodeError)
            else "unverifiable"
            if isinstance(exc, CannotVerify)
            else "forged"
        )
        log.warning(
            f"ignored a {kind} block copy",
            extra={"topic": self.topic, "offset": offset, "height": height, "reason": str(exc)},
        )
        tx_ids: list[bytes] = []
        if isinstance(exc, CannotVerify):
            try:
                tx_ids = [r.tx_id for r in decode_finalized(raw)[2]]
            except DecodeError:
                tx_ids = []
        with self._cond:
            self._position = offset + 1
            setattr(self, kind, getattr(self, kind) + 1)
            for tx_id in tx_ids:
                if tx_id not in self._receipts:
                    self._unverified[tx_id] = str(exc)
            while len(self._unverified) > self.max_entries:
                self._unverified.popitem(last=False)

    def _claim(self, offset: int, raw: bytes) -> None:
        try:
            claim = Receipt.decode(raw)
        except ValueError:
            with self._cond:
                self.forged_receipts += 1
            log.warning(
                "a receipts message that is not a Receipt",
                extra={"topic": self.receipts_topic, "offset": offset},
            )
            return
        with self._cond:
            certified = self._receipts.get(claim.tx_id)
            if certified is not None:
                self._check_claim(claim, certified)
                return
            self._claims.setdefault(claim.tx_id, []).append(claim)
            while len(self._claims) > self.max_entries:
                self._claims.popitem(last=False)

    def _check_claim(self, claim: Receipt, certified: Receipt) -> None:
        self.receipts_checked += 1
        if receipt_contradicts(claim, certified):
            self.forged_receipts += 1
            log.warning(
                "ignored a receipt that contradicts the certified outcome",
                extra={
                    "tx_id": claim.tx_id.hex(),
                    "claimed_height": claim.height,
                    "claimed_code": claim.code.name,
                    "certified_height": certified.height,
                    "certified_code": certified.code.name,
                },
            )

    def _evict(self) -> None:
        excess = len(self._receipts) - self.max_entries
        if excess <= 0:
            return
        for tx_id in list(self._receipts):
            if excess <= 0:
                break
            if tx_id not in self._waiting:
                del self._receipts[tx_id]
                excess -= 1

    # -- public API -------------------------------------------------------------------

    @property
    def position(self) -> int:
        """The next offset of the blocks topic this watcher will read."""
        with self._cond:
            return self._position

    def get(self, tx_id: bytes) -> Receipt | None:
        """The verified outcome of ``tx_id`` if it has been read (and not forgotten)."""
        with self._cond:
            return self._receipts.get(tx_id)

    def wait(self, tx_id: bytes, timeout: float) -> Receipt:
        """Block until the verified outcome of ``tx_id`` arrives; :class:`ReceiptTimeout`
        (or :class:`OutcomeUnverifiable`) after ``timeout`` seconds, :class:`SdkError` if the
        watcher is closed or failed."""
        with self._cond:
            self._waiting[tx_id] = self._waiting.get(tx_id, 0) + 1
            try:
                found = self._cond.wait_for(
                    lambda: (
                        tx_id in self._receipts or self._failure is not None or self._stop.is_set()
                    ),
                    timeout,
                )
                if tx_id in self._receipts:
                    return self._receipts[tx_id]
                if self._failure is not None:
                    raise SdkError(f"outcome watcher failed: {error_text(self._failure)}") from (
                        self._failure
                    )
                if found:
                    raise SdkError("outcome watcher is closed")
                reason = self._unverified.pop(tx_id, None)
                if reason is not None:
                    raise OutcomeUnverifiable(tx_id, timeout, reason)
                raise ReceiptTimeout(tx_id, timeout)
            finally:
                left = self._waiting[tx_id] - 1
                if left:
                    self._waiting[tx_id] = left
                else:
                    del self._waiting[tx_id]

    def counts(self) -> dict[str, int]:
        """What the watcher has read and refused so far."""
        with self._cond:
            return {
                "verified_height": self.verified_height,
                "duplicates": self.duplicates,
                "malformed": self.malformed,
                "forged": self.forged,
                "unverifiable": self.unverifiable,
                "conflicting": self.conflicting,
                "receipts_checked": self.receipts_checked,
                "forged_receipts": self.forged_receipts,
            }

    def close(self, timeout: float = 10.0) -> None:
        """Stop the reading thread and close its consumer (idempotent)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """True while the reading thread runs."""
        return self._thread.is_alive()

    def __enter__(self) -> ReceiptWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
