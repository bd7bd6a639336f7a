"""A 3-node KRaft cluster: replication factor 3, min.insync.replicas=2, survives a loss."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from harness.stack_fixtures import private_settings, removed_afterwards
from infra.invocation import DEFAULT_PATH, script
from infra.kafka_server import KafkaCluster
from infra.stack import Stack
from runtime.kafka_config import admin_config, consumer_config, producer_config
from runtime.topics import ensure_topics

pytestmark = pytest.mark.integration


def test_three_node_cluster_replicates_and_keeps_acknowledged_messages() -> None:
    settings = private_settings(brokers=3)
    cluster = KafkaCluster(settings)
    with removed_afterwards(settings.state_dir):
        try:
            cluster.start(timeout=120)
            bootstrap = settings.bootstrap_servers
            admin = AdminClient(admin_config(bootstrap))
            ensure_topics(admin, prefix="c3.")
            topic = admin.list_topics(timeout=10).topics["c3.tx"]
            assert all(len(p.replicas) == 3 for p in topic.partitions.values())
            resource = ConfigResource(ResourceType.TOPIC, "c3.tx")
            config = admin.describe_configs([resource])[resource].result()
            assert config["min.insync.replicas"].value == "2"

            producer = Producer(producer_config(bootstrap))
            errors: list[KafkaError] = []

            def on_delivery(err: KafkaError | None, _msg: object) -> None:
                if err is not None:
                    errors.append(err)

            for i in range(100):
                producer.produce("c3.tx", value=f"{i}".encode(), on_delivery=on_delivery)
            assert producer.flush(30) == 0
            cluster.stop_node(cluster.nodes[2], kill=True)  # SIGKILL one of three
            for i in range(100, 200):
                producer.produce("c3.tx", value=f"{i}".encode(), on_delivery=on_delivery)
            assert producer.flush(60) == 0
            assert errors == []

            consumer = Consumer(consumer_config(bootstrap, "c3-check"))
            consumer.subscribe(["c3.tx"])
            got: list[int] = []
            deadline = time.monotonic() + 60
            while len(got) < 200 and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is None:
                    got.append(int(msg.value() or b"-1"))
            consumer.close()
            assert got == list(range(200))
        finally:
            cluster.stop()


def test_down_stops_every_node_of_up_brokers_3_whatever_the_environment() -> None:
    """`up --brokers 3`, then `status` and `down` in a new shell whose environment says one
    broker: the node count recorded in the state directory wins (D36)."""
    settings = private_settings(brokers=3)
    root = Path(__file__).resolve().parents[2]
    base = {
        "PATH": DEFAULT_PATH,
        "HOME": os.environ["HOME"],
        "PYTHONPATH": str(root),
        "PANTHEON_STATE_DIR": str(settings.state_dir),
    }
    ports = {
        "PANTHEON_KAFKA_PORT": str(settings.kafka_port),
        "PANTHEON_PG_PORT": str(settings.pg_port),
        "PANTHEON_PROM_PORT": str(settings.prom_port),
    }

    def run(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script()), *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    cluster = KafkaCluster(settings)
    with removed_afterwards(settings.state_dir):
        try:
            up = run("up", "--brokers", "3", "--no-consortium", env={**base, **ports})
            assert up.returncode == 0, up.stdout + up.stderr
            assert len(cluster.running()) == 3
            one = {**base, "PANTHEON_KAFKA_BROKERS": "1"}
            status = run("status", env=one)
            assert "3/3 nodes running, 3 brokers answering" in status.stdout, status.stdout
            down = run("down", env=one)
            assert down.returncode == 0, down.stdout + down.stderr
            assert cluster.running() == []
        finally:
            cluster.stop()
            Stack(settings).down()
