"""The validator's read of ``pantheon.tx``: assigned only while its core reads it (D57).

A following standby (:attr:`ledger.validator_core.ValidatorCore.reads_tx` false) reads
neither the tx log nor fetches from it: with two operators per institution that halves the
broker's readers of its busiest topic. While it follows it asks the broker for the log's
end about once a second (one ListOffsets request; :meth:`TxRead.sync`), for the core to see
work that nobody finalizes without it. When the core starts reading (a primary at start, a
standby that turns eager) the partition is assigned at the core's ``tx_seek``, the offset
after its last block; when it stops, the partition is unassigned and what the signature
pipeline holds from it is dropped (the core drops tx messages it does not want, and any
below the seek, too).
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from ledger.validator_core import ValidatorCore
from streams.signature_pipeline import SignaturePipeline

log = logging.getLogger("pantheon.validator")

END_QUERY_SECONDS = 1.0
"""How often a following standby asks for the tx log's end."""


class TxRead:
    """Where the validator is in ``pantheon.tx``, and whether it reads it at all."""

    def __init__(self, consumer: Consumer, topic: str, position: int, interval_ms: int) -> None:
        self.consumer = consumer
        self.topic = topic
        self.interval_ms = interval_ms
        self.reading = False
        self.position = position  # next offset to read
        self.high = -1  # the end of the log as last seen
        self.appended_ms = 0  # broker append time of the newest tx message read
        self.messages = 0  # tx messages read since the start (a following standby: none)
        self.started_from: int | None = None  # the offset of the last (re)start of the read
        self._last_query = 0.0

    def read(self, offset: int, appended_ms: int) -> None:
        """A tx message at ``offset`` was read."""
        self.position = offset + 1
        self.appended_ms = appended_ms
        self.messages += 1

    def sync(self, core: ValidatorCore, pipeline: SignaturePipeline | None) -> None:
        """Assign, move or unassign the partition as the core asks (module docstring)."""
        partition = TopicPartition(self.topic, 0)
        if core.reads_tx and core.tx_seek is not None:
            offset, core.tx_seek = core.tx_seek, None
            if pipeline is not None:
                pipeline.discard()
            if self.reading:
                self.consumer.incremental_unassign([partition])
            self.consumer.incremental_assign([TopicPartition(self.topic, 0, offset)])
            log.info("reading the tx log", extra={"from": offset, "rank": core.rank})
            self.reading, self.position, self.started_from = True, offset, offset
        elif not core.reads_tx:
            if self.reading:
                self.consumer.incremental_unassign([partition])
                if pipeline is not None:
                    pipeline.discard()
                log.info("following: not reading the tx log", extra={"rank": core.rank})
                self.reading = False
            if time.monotonic() - self._last_query >= END_QUERY_SECONDS:
                self._last_query = time.monotonic()
                high = self._query_end()
                if high >= 0:
                    core.note_tx_end(high)

    def caught_up(self, core: ValidatorCore) -> bool:
        """Whether this validator reads the tx log live, not history (markers are only
        emitted then): the newest message it read was appended (broker clock) less than a
        block interval ago, or it has read the whole log. Under a steady stream the log's end
        moves on during every watermark query, so "read the whole log" alone was rarely true
        and blocks were cut mostly by size (about one a second at 400 tx/s)."""
        if core.cutter.oldest_pending_ms is None:
            return False
        if _now_ms() - self.appended_ms < self.interval_ms:
            return True
        # the end of the log as the last fetch response gave it (no request; D47)
        _, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, 0), cached=True)
        if high < 0:  # no fetch response yet: ask, now and then
            if time.monotonic() - self._last_query < 0.5:
                return False
            self._last_query = time.monotonic()
            high = self._query_end()
            if high < 0:
                return False
        self.high = high
        return self.position >= self.high

    def live(self) -> bool:
        """What ``pantheon status`` shows as caught up: the newest tx message read was
        appended less than a block interval ago, or the end of the log as last queried is
        reached."""
        return _now_ms() - self.appended_ms < self.interval_ms or self.position >= self.high

    def _query_end(self) -> int:
        try:
            _, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, 0), timeout=2)
        except KafkaException as exc:  # a broker hiccup: try again later
            log.warning("watermark query failed", extra={"error": str(exc)})
            return -1
        return int(high)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
