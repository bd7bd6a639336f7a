"""Generated server configuration and settings: pure checks, no servers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from infra import invocation, procs
from infra.kafka_server import JIT_C1_ONLY, KafkaCluster, jvm_options
from infra.settings import Settings, default_state_dir
from runtime.kafka_config import consumer_config, producer_config
from runtime.topics import FEEDS_CONFIG, LEDGER_TOPICS, ledger_config, topic_specs


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
    (props,) = [
        _props(KafkaCluster(_settings(tmp_path, 1)).server_properties(n))
        for n in KafkaCluster(_settings(tmp_path, 1)).nodes
    ]
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
        "pantheon.feeds",
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
    (feeds,) = [s for s in LEDGER_TOPICS if s.suffix == "feeds"]
    assert feeds.config == FEEDS_CONFIG and FEEDS_CONFIG["retention.ms"] == "3600000"
    assert all(not s.config for s in LEDGER_TOPICS if s.suffix != "feeds")  # for ever


_VARS = (
    "PANTHEON_KAFKA_PORT",
    "PANTHEON_KAFKA_BROKERS",
    "PANTHEON_PG_PORT",
    "PANTHEON_PROM_PORT",
    "PANTHEON_GATEWAY_PORT",
    "PANTHEON_GATEWAY_WORKERS",
    "PANTHEON_TOPIC_PREFIX",
    "PANTHEON_KAFKA_AUTH",
)


def test_settings_recorded_by_up_are_found_by_a_new_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in _VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PANTHEON_STATE_DIR", str(tmp_path))
    started = Settings.from_env().with_changes(
        kafka_port=21000,
        kafka_brokers=3,
        pg_port=21010,
        prom_port=21011,
        gateway_port=21020,
        gateway_workers=2,
    )
    started.record()  # what `up` does
    found = Settings.from_env()
    ports = (found.kafka_port, found.pg_port, found.prom_port, found.gateway_port)
    assert ports == (21000, 21010, 21011, 21020) and found.kafka_brokers == 3
    assert found.gateway_workers == 2  # `restart gateway` in a new shell keeps the count
    monkeypatch.setenv("PANTHEON_PG_PORT", "21099")  # a variable set still wins ...
    monkeypatch.setenv("PANTHEON_KAFKA_BROKERS", "1")  # ... but not over the nodes on disk
    found = Settings.from_env()
    assert found.pg_port == 21099 and found.kafka_brokers == 3
    monkeypatch.setenv("PANTHEON_GATEWAY_WORKERS", "0")  # a bad count is refused by name
    with pytest.raises(ValueError, match="PANTHEON_GATEWAY_WORKERS"):
        Settings.from_env()


def test_down_stops_every_kafka_node_on_disk_whatever_the_settings(tmp_path: Path) -> None:
    sleepers = []
    for node in (1, 2, 3):  # three "nodes" of a cluster started with --brokers 3
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        sleepers.append(proc)
        home = tmp_path / "kafka" / f"node-{node}"
        home.mkdir(parents=True)
        (home / "pid").write_text(f"{proc.pid}\n")
    try:
        KafkaCluster(_settings(tmp_path, 1)).stop()  # settings that name one node
        assert not any(procs.pid_alive(p.pid) for p in sleepers)  # stopped (and reaped)
    finally:
        for proc in sleepers:
            proc.kill()


def test_printed_commands_name_the_script_and_a_state_dir_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = invocation.script()
    home = script.parents[2]  # the checkout holding .venv/bin/pantheon
    rel = script.relative_to(home)
    monkeypatch.setattr("infra.invocation.shutil.which", lambda *_a, **_k: None)  # not on PATH
    monkeypatch.setenv(invocation.CALLER_DIR, str(home))
    default = Settings.from_env().with_changes(state_dir=default_state_dir())
    assert invocation.pantheon("status", settings=default) == f"{rel} status"
    elsewhere = default.with_changes(state_dir=tmp_path / "my state")
    assert invocation.pantheon("down", settings=elsewhere) == (
        f"PANTHEON_STATE_DIR='{tmp_path}/my state' {rel} down"
    )
    assert invocation.pantheon("proof", "--dsn", "host=h port=1").endswith("--dsn 'host=h port=1'")
    monkeypatch.setenv(invocation.CALLER_DIR, str(tmp_path))  # called from elsewhere: absolute
    assert invocation.pantheon("status") == f"{script} status"


def test_broker_jit_is_c1_only_unless_the_operator_says_otherwise() -> None:
    """D69: a fresh broker's C2 compiler took half a core for minutes; the default stops at
    C1, and options given in PANTHEON_KAFKA_JVM_OPTS come last, so the JVM obeys them."""
    default = jvm_options("")
    assert JIT_C1_ONLY in default and default[-1] == JIT_C1_ONLY
    chosen = jvm_options("-XX:TieredStopAtLevel=4  -XX:+AlwaysPreTouch")
    assert chosen[-2:] == ["-XX:TieredStopAtLevel=4", "-XX:+AlwaysPreTouch"]
    assert chosen.index(JIT_C1_ONLY) < chosen.index("-XX:TieredStopAtLevel=4")
