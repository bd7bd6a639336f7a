"""faust-streaming (aiokafka) against the chosen Kafka release: an agent with a table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from runtime.kafka_config import admin_config, consumer_config, producer_config
from runtime.topics import wait_visible

pytestmark = pytest.mark.integration

PROBE = Path(__file__).with_name("faust_probe.py")


def test_faust_agent_consumes_counts_and_produces(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    topic_in, topic_out = f"faust-in-{unique}", f"faust-out-{unique}"
    # The table's changelog is created up front, as our topic admin will do for every
    # processor: faust's own lazy creation races with metadata propagation on a fresh
    # broker (PartitionsMismatch: "changelog has 0 partitions").
    changelog = f"probe-{unique}-counts-changelog"
    admin = AdminClient(admin_config(bootstrap))
    for future in admin.create_topics(
        [NewTopic(t, num_partitions=1, replication_factor=1) for t in (topic_in, topic_out)]
        + [
            NewTopic(
                changelog,
                num_partitions=1,
                replication_factor=1,
                config={"cleanup.policy": "compact"},
            )
        ]
    ).values():
        future.result()
    wait_visible(admin, [topic_in, topic_out, changelog])

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    log_path = tmp_path / "worker.log"
    log = log_path.open("wb")
    worker = subprocess.Popen(
        [
            sys.executable,
            str(PROBE),
            bootstrap,
            topic_in,
            topic_out,
            f"probe-{unique}",
            str(tmp_path / "faust"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        producer = Producer(producer_config(bootstrap))
        sent = [(b"dev-a", b"x1"), (b"dev-b", b"y1"), (b"dev-a", b"x2"), (b"dev-a", b"x3")]
        for key, value in sent:
            producer.produce(topic_in, key=key, value=value)
        assert producer.flush(30) == 0

        consumer = Consumer(consumer_config(bootstrap, f"check-{unique}"))
        consumer.subscribe([topic_out])
        got: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + 120
        while len(got) < len(sent) and time.monotonic() < deadline:
            assert worker.poll() is None, log_path.read_text()
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append((msg.key() or b"", msg.value() or b""))
        consumer.close()
        assert got == [  # worker log on failure: see below
            (b"dev-a", b"X1|1"),
            (b"dev-b", b"Y1|1"),
            (b"dev-a", b"X2|2"),
            (b"dev-a", b"X3|3"),
        ]
        # The table's state went to its changelog: the last count of dev-a is 3.
        reader = Consumer(consumer_config(bootstrap, f"changelog-{unique}"))
        reader.subscribe([changelog])
        entries: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(entries) < len(sent) and time.monotonic() < deadline:
            msg = reader.poll(0.5)
            if msg is not None and msg.error() is None:
                entries.append(msg.value() or b"")
        reader.close()
        assert len(entries) == len(sent)
        assert entries[-1] == b"3"
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
        log.close()
        print(log_path.read_text(errors="replace")[-4000:])
