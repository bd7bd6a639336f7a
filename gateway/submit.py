"""Submitting validated envelopes to the ledger's tx topic (idempotent producer, acks=all)."""

from __future__ import annotations

import threading
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from gateway.errors import Unavailable
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
        errors: list[KafkaError] = []
        delivered: list[Any] = []

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            (errors.append(err) if err is not None else delivered.append(msg))

        with self._lock:
            try:
                self._producer.produce(self.topic, value=raw, key=key, on_delivery=on_delivery)
            except (BufferError, KafkaException):
                raise Unavailable("the ledger's broker does not accept transactions now") from None
            self._producer.flush(self.timeout_s)
        if errors:
            raise Unavailable("the transaction could not be delivered to the ledger")
        if not delivered:  # still queued: it may land after this answer
            raise Unavailable(
                f"the ledger did not confirm the transaction within {self.timeout_s:g} s; it "
                "may still be recorded: look up its id before sending it again (a second copy "
                "is refused as a replay)"
            )

    def close(self) -> None:
        self._producer.flush(10)
