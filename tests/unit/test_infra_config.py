"""Generated server configuration and settings: pure checks, no servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.kafka_server import KafkaCluster
from infra.settings import Settings
from streams.kafka_config import consumer_config, producer_config
from streams.topics import LEDGER_TOPICS, ledger_config, topic_specs


def _settings(tmp_path: Path, brokers: int) -> Settings:
    return Settings.from_env().with_changes(
        state_dir=tmp_path, kafka_brokers=brokers, kafka_port=30000
    )


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_three_node_cluster_is_configured_for_durability(tmp_path: Path) -> None:
    cluster = KafkaCluster(_settings(tmp_path, 3))
    props = [_props(cluster.server_properties(n)) for n in cluster.nodes]
    assert [p["node.id"] for p in props] == ["1", "2", "3"]
    assert {p["controller.quorum.voters"] for p in props} == {
        "1@127.0.0.1:30001,2@127.0.0.1:30003,3@127.0.0.1:30005"
    }
    for p in props:
        assert p["default.replication.factor"] == "3"
        assert p["min.insync.replicas"] == "2"
        assert p["unclean.leader.election.enable"] == "false"
        assert p["auto.create.topics.enable"] == "false"
        assert p["listeners"].count("127.0.0.1") == 2  # loopback only


def test_single_node_cluster_uses_replication_one(tmp_path: Path) -> None:
    (props,) = [_props(KafkaCluster(_settings(tmp_path, 1)).server_properties(n))
                for n in KafkaCluster(_settings(tmp_path, 1)).nodes]  # fmt: skip
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["min.insync.replicas"] == "1"


def test_settings_reject_bad_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANTHEON_KAFKA_PORT", "70000")
    with pytest.raises(ValueError, match=r"outside 1\.\.65535"):
        Settings.from_env()


def test_producers_are_idempotent_with_acks_all_and_consumers_never_autocommit() -> None:
    producer = producer_config("x:1")
    assert producer["enable.idempotence"] is True
    assert producer["acks"] == "all"
    consumer = consumer_config("x:1", "g")
    assert consumer["enable.auto.commit"] is False
    assert consumer["isolation.level"] == "read_committed"


def test_ledger_topics_keep_data_forever_with_broker_time() -> None:
    names = [spec.name() for spec in topic_specs(["acme"])]
    assert names == [
        "pantheon.tx",
        "pantheon.votes",
        "pantheon.blocks",
        "pantheon.receipts",
        "pantheon.l2.records",
        "pantheon.l2.rejected",
        "pantheon.iam.acme",
    ]
    assert all(s.partitions == 1 for s in LEDGER_TOPICS if not s.suffix.startswith("l2."))
    config = ledger_config(3)
    assert config["retention.ms"] == "-1"
    assert config["message.timestamp.type"] == "LogAppendTime"
    assert config["min.insync.replicas"] == "2"
    assert ledger_config(1)["min.insync.replicas"] == "1"
