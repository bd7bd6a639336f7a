"""Receipts of transactions, read from ``<prefix>receipts`` by a background thread.

Theory of operation
-------------------
* Every validator publishes the same ``Receipt`` (tx id, height, offset in the tx topic,
  result code, block hash) for every entry of a final block. :class:`ReceiptWatcher` reads
  partition 0 of the receipts topic with a manually assigned consumer (no consumer group
  commits) from a start offset: by default the topic's end when the watcher is created
  (resolved right away, so a receipt produced after the constructor returns is never
  missed), or 0 with ``from_beginning=True``, or any ``start_offset``.
* The FIRST receipt per tx id is kept; later duplicates are ignored. A message that does
  not decode as a ``Receipt`` is counted in :attr:`ReceiptWatcher.malformed` and skipped.
* :meth:`ReceiptWatcher.wait` blocks on a condition until the receipt arrives, or raises
  :class:`ReceiptTimeout`. If the reading thread dies, waiters get :class:`SdkError`.
* Memory is bounded: at most ``max_entries`` (default 100,000) receipts are kept; beyond
  that the oldest ones that no thread is waiting for are forgotten. A caller that waits
  for a receipt long after it was published (after ``max_entries`` newer receipts) must
  start a new watcher at an earlier offset, or read the projections.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from ledger.hashing import HASH_BYTES
from ledger.results import ResultCode
from schemas.codec import decode
from schemas.errors import CodecError
from streams.kafka_config import consumer_config
from streams.topics import DEFAULT_PREFIX

DEFAULT_MAX_ENTRIES = 100_000
_BATCH = 500
_POLL_SECONDS = 0.1


class SdkError(Exception):
    """Base class of the client SDK's errors."""


class ReceiptTimeout(SdkError, TimeoutError):
    """No receipt for ``tx_id`` arrived within ``timeout`` seconds."""

    def __init__(self, tx_id: bytes, timeout: float) -> None:
        super().__init__(f"no receipt for tx {tx_id.hex()} within {timeout:g}s")
        self.tx_id = tx_id
        self.timeout = timeout


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
        """Parse a ``pantheon.receipts`` message; raises ``ValueError`` if it is not one."""
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


class ReceiptWatcher:
    """A background reader of the receipts topic; :meth:`wait` for one transaction's receipt.

    Thread-safe: any number of threads may wait at once. Use as a context manager or call
    :meth:`close`.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        start_offset: int | None = None,
        from_beginning: bool = False,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        consumer_overrides: dict[str, Any] | None = None,
        timeout: float = 10.0,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.topic = f"{prefix}receipts"
        self.max_entries = max_entries
        self.malformed = 0
        self.duplicates = 0
        self._receipts: OrderedDict[bytes, Receipt] = OrderedDict()
        self._waiting: dict[bytes, int] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        config = consumer_config(
            bootstrap,
            f"pantheon-sdk-receipts-{uuid.uuid4().hex}",  # never joined: assign() only
            **{"enable.auto.offset.store": False, **(consumer_overrides or {})},
        )
        self._consumer = Consumer(config)
        try:
            partition = TopicPartition(self.topic, 0)
            if start_offset is None:
                start_offset = 0 if from_beginning else self._end_offset(partition, timeout)
            self.start_offset = start_offset
            self._consumer.assign([TopicPartition(self.topic, 0, start_offset)])
        except KafkaException as exc:
            self._consumer.close()
            raise SdkError(f"cannot read {self.topic}: {exc}") from exc
        self._position = start_offset
        self._thread = threading.Thread(
            target=self._run, name=f"receipts-{self.topic}", daemon=True
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
                messages = self._consumer.consume(_BATCH, _POLL_SECONDS)
                if messages:
                    self._ingest(messages)
        except BaseException as exc:  # reported to every waiter instead of dying silently
            with self._cond:
                self._failure = exc
                self._cond.notify_all()
        finally:
            self._consumer.close()

    def _ingest(self, messages: list[Message]) -> None:
        with self._cond:
            for msg in messages:
                error = msg.error()
                if error is not None:
                    if error.fatal():
                        raise KafkaException(error)
                    continue  # transient (e.g. partition EOF, broker down): librdkafka retries
                self._position = (msg.offset() or 0) + 1
                try:
                    receipt = Receipt.decode(msg.value() or b"")
                except ValueError:
                    self.malformed += 1
                    continue
                if receipt.tx_id in self._receipts:
                    self.duplicates += 1
                    continue
                self._receipts[receipt.tx_id] = receipt
                self._evict()
            self._cond.notify_all()

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
        """The next offset of the receipts topic this watcher will read."""
        with self._cond:
            return self._position

    def get(self, tx_id: bytes) -> Receipt | None:
        """The receipt of ``tx_id`` if it has been read (and not forgotten), else None."""
        with self._cond:
            return self._receipts.get(tx_id)

    def wait(self, tx_id: bytes, timeout: float) -> Receipt:
        """Block until the receipt of ``tx_id`` arrives; :class:`ReceiptTimeout` after
        ``timeout`` seconds, :class:`SdkError` if the watcher is closed or failed."""
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
                    raise SdkError(f"receipt watcher failed: {self._failure!r}") from (
                        self._failure
                    )
                if found:
                    raise SdkError("receipt watcher is closed")
                raise ReceiptTimeout(tx_id, timeout)
            finally:
                left = self._waiting[tx_id] - 1
                if left:
                    self._waiting[tx_id] = left
                else:
                    del self._waiting[tx_id]

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
