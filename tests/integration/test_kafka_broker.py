"""The real broker: idempotent produce and in-order consume, ledger topic settings."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from infra.kafka_server import KafkaCluster
from runtime.kafka_config import admin_config, consumer_config, producer_config
from runtime.topics import FEEDS_CONFIG, LEDGER_TOPICS, TopicError, ensure_topics, iam_topic

pytestmark = pytest.mark.integration


def _consume(
    bootstrap: str, topic: str, group: str, count: int, timeout: float = 30.0
) -> list[Message]:
    consumer = Consumer(consumer_config(bootstrap, group))
    consumer.subscribe([topic])
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append(msg)
    finally:
        consumer.close()
    return got


def test_ensure_topics_creates_ledger_topics_once_with_their_settings(
    bootstrap: str, unique: str
) -> None:
    admin = AdminClient(admin_config(bootstrap))
    prefix = f"t{unique}."
    created = ensure_topics(admin, prefix=prefix, institutions=["acme", "globex"])
    expected = {spec.name(prefix) for spec in LEDGER_TOPICS} | {
        f"{prefix}iam.acme",
        f"{prefix}iam.globex",
    }
    assert set(created) == expected
    assert ensure_topics(admin, prefix=prefix, institutions=["acme", "globex"]) == []

    metadata = admin.list_topics(timeout=10)
    assert len(metadata.topics[f"{prefix}l2.records"].partitions) > 1
    assert len(metadata.topics[f"{prefix}tx"].partitions) == 1
    resource = ConfigResource(ResourceType.TOPIC, f"{prefix}tx")
    config = admin.describe_configs([resource])[resource].result()
    assert config["retention.ms"].value == "-1"
    assert config["message.timestamp.type"].value == "LogAppendTime"


def test_ensure_topics_refuses_a_topic_with_finite_retention(bootstrap: str, unique: str) -> None:
    admin = AdminClient(admin_config(bootstrap))
    prefix = f"bad{unique}."
    futures = admin.create_topics(
        [
            NewTopic(
                f"{prefix}tx",
                num_partitions=1,
                replication_factor=1,
                config={"retention.ms": "60000"},
            )
        ]
    )
    for future in futures.values():
        future.result()
    with pytest.raises(TopicError, match=r"retention\.ms=60000"):
        ensure_topics(admin, prefix=prefix)


def _config(admin: AdminClient, name: str) -> dict[str, str]:
    resource = ConfigResource(ResourceType.TOPIC, name)
    return {k: v.value for k, v in admin.describe_configs([resource])[resource].result().items()}


def test_the_feeds_topic_is_bounded_even_if_it_was_created_for_ever(
    bootstrap: str, unique: str
) -> None:
    """D57: feeds are kept an hour (and 1 GiB), set on a new topic and on one created before
    the bound; the ledger topics stay for ever."""
    admin = AdminClient(admin_config(bootstrap))
    prefix = f"feeds{unique}."
    futures = admin.create_topics(  # as ensure_topics made it before D57
        [NewTopic(f"{prefix}feeds", num_partitions=1, config={"retention.ms": "-1"})]
    )
    for future in futures.values():
        future.result()
    ensure_topics(admin, prefix=prefix)
    feeds = _config(admin, f"{prefix}feeds")
    assert {k: feeds[k] for k in FEEDS_CONFIG} == FEEDS_CONFIG
    assert feeds["message.timestamp.type"] == "LogAppendTime"
    assert _config(admin, f"{prefix}tx")["retention.ms"] == "-1"
    fresh = f"feeds2{unique}."
    ensure_topics(admin, prefix=fresh)
    assert _config(admin, f"{fresh}feeds")["retention.ms"] == FEEDS_CONFIG["retention.ms"]
    assert ensure_topics(admin, prefix=fresh) == []


def test_iam_topic_rejects_names_that_would_escape_the_prefix() -> None:
    with pytest.raises(TopicError):
        iam_topic("../x")
    with pytest.raises(TopicError):
        iam_topic("")


def test_idempotent_producer_round_trips_every_message_in_order(
    bootstrap: str, unique: str
) -> None:
    admin = AdminClient(admin_config(bootstrap))
    prefix = f"rt{unique}."
    ensure_topics(admin, prefix=prefix)
    topic = f"{prefix}tx"
    producer = Producer(producer_config(bootstrap))
    acked: list[int] = []

    def on_delivery(err: object, msg: object) -> None:
        assert err is None, err
        acked.append(int(msg.value()))  # type: ignore[attr-defined]

    count = 2000
    for i in range(count):
        producer.produce(
            topic, key=f"sender-{i % 7}".encode(), value=str(i).encode(), on_delivery=on_delivery
        )
        if i % 500 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    assert acked == list(range(count))

    messages = _consume(bootstrap, topic, f"g{unique}", count)
    assert [int(m.value() or b"-1") for m in messages] == list(range(count))
    assert [m.offset() for m in messages] == list(range(count))
    # LogAppendTime: the broker's clock stamps every record (type 2 in librdkafka).
    assert {m.timestamp()[0] for m in messages} == {2}


def test_cluster_reports_health_and_survives_a_second_start(kafka: KafkaCluster) -> None:
    assert kafka.healthy()
    kafka.start()  # idempotent: already running
    assert kafka.running() == [1]
