"""D71: a producer is destroyed when its owner closes it, not when the collector takes it,
so it cannot go on reconnecting (and logging) once its broker has stopped."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from infra.procs import free_port
from runtime.delivery import close_producer
from runtime.kafka_config import producer_config


def test_close_drops_what_was_not_delivered_and_destroys_the_client() -> None:
    nobody = f"127.0.0.1:{free_port()}"  # no broker: nothing can be delivered
    producer = Producer(producer_config(nobody, log_level=0))
    producer.produce("t", value=b"queued")
    assert close_producer(producer, 0.2) == 1
    with pytest.raises(RuntimeError, match="closed"):
        producer.flush(0)  # destroyed: no thread of it is left to reconnect
    assert close_producer(producer, 0.2) == 0  # a second close is harmless
