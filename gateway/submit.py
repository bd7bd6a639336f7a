"""Submitting validated envelopes to the ledger's tx topic (idempotent producer, acks=all)."""

from __future__ import annotations

import threading

from confluent_kafka import KafkaException, Producer

from gateway.errors import Unavailable
from runtime.delivery import close_producer, produce_flushed
from runtime.kafka_config import producer_config
from runtime.topics import DEFAULT_PREFIX


class KafkaSubmitter:
    """Produces envelopes keyed by the sender's key id and waits for their delivery."""

    def __init__(
        self, bootstrap: str, prefix: str = DEFAULT_PREFIX, timeout_s: float = 10.0
    ) -> None:
        self.topic = f"{prefix}tx"
        self.timeout_s = timeout_s
        self._producer = Producer(producer_config(bootstrap))
        self._lock = threading.Lock()

    def submit(self, raw: bytes, key: bytes) -> None:
        """Deliver one envelope or raise :class:`Unavailable`."""
        with self._lock:
            try:
                delivered, errors = produce_flushed(
                    self._producer, self.topic, [(key, raw)], self.timeout_s
                )
            except (BufferError, KafkaException):
                raise Unavailable("the ledger's broker does not accept transactions now") from None
        if errors:
            raise Unavailable("the transaction could not be delivered to the ledger")
        if not delivered:  # still queued: it may land after this answer
            raise Unavailable(
                f"the ledger did not confirm the transaction within {self.timeout_s:g} s; it "
                "may still be recorded: look up its id before sending it again (a second copy "
                "is refused as a replay)"
            )

    def close(self) -> None:
        close_producer(self._producer, 10)
