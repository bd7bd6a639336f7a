"""A local Apache Kafka cluster in KRaft mode: 1 or 3 combined broker+controller nodes.

Each node ``i`` (1-based) has ``<state>/kafka/node-<i>/`` with its generated
``server.properties``, ``log4j2.properties``, ``data/`` (formatted once with the cluster's
id), ``server.log`` and ``pid``. All listeners are on loopback. With 3 nodes the cluster
uses replication factor 3, ``min.insync.replicas=2`` and no unclean leader election, the
settings DESIGN.md section 3 asks of production.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from infra import kafka_dist, procs
from infra.errors import PortTakenError, PrerequisiteError, StackError
from infra.settings import Settings

log = logging.getLogger(__name__)

JVM_HEAP = os.environ.get("PANTHEON_KAFKA_HEAP", "512m")


@dataclass(frozen=True, slots=True)
class KafkaNode:
    """One combined broker+controller process."""

    node_id: int
    port: int
    controller_port: int
    home: Path

    @property
    def pid_file(self) -> Path:
        return self.home / "pid"

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"


class KafkaCluster:
    """Start, stop and inspect the local KRaft cluster described by ``settings``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.state_dir / "kafka"
        self.nodes = [
            KafkaNode(i + 1, port, cport, self.root / f"node-{i + 1}")
            for i, (port, cport) in enumerate(settings.kafka_ports)
        ]

    # -- configuration -------------------------------------------------------------------
    def _cluster_id(self) -> str:
        path = self.root / "cluster.id"
        if path.exists():
            return path.read_text().strip()
        cluster_id = "-"
        while cluster_id.startswith("-"):  # the storage tool would read it as an option
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        self.root.mkdir(parents=True, exist_ok=True)
        path.write_text(cluster_id + "\n")
        return cluster_id

    def server_properties(self, node: KafkaNode) -> str:
        """The ``server.properties`` of one node."""
        host = self.settings.host
        n = len(self.nodes)
        replication = 3 if n >= 3 else 1
        min_isr = 2 if n >= 3 else 1
        voters = ",".join(f"{m.node_id}@{host}:{m.controller_port}" for m in self.nodes)
        lines = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{host}:{node.port},CONTROLLER://{host}:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{host}:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(node.data_dir),
            "num.partitions": "1",
            "default.replication.factor": str(replication),
            "min.insync.replicas": str(min_isr),
            "offsets.topic.replication.factor": str(replication),
            "transaction.state.log.replication.factor": str(replication),
            "transaction.state.log.min.isr": str(min_isr),
            "share.coordinator.state.topic.replication.factor": str(replication),
            "share.coordinator.state.topic.min.isr": str(min_isr),
            "unclean.leader.election.enable": "false",
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": "0",
            "log.message.timestamp.type": "LogAppendTime",
            "log.retention.ms": "-1",
            "message.max.bytes": str(2 * 1024 * 1024),
        }
        return "".join(f"{k}={v}\n" for k, v in lines.items())

    @staticmethod
    def log4j2_properties(node: KafkaNode) -> str:
        """Quiet file logging: warnings, plus the line that says the server started."""
        return "\n".join(
            [
                "status = warn",
                "appender.file.type = File",
                "appender.file.name = FILE",
                f"appender.file.fileName = {node.log_file}",
                "appender.file.layout.type = PatternLayout",
                "appender.file.layout.pattern = [%d] %p %m (%c)%n",
                "rootLogger.level = WARN",
                "rootLogger.appenderRef.file.ref = FILE",
                "logger.raft.name = kafka.server.KafkaRaftServer",
                "logger.raft.level = INFO",
                "",
            ]
        )

    # -- lifecycle -----------------------------------------------------------------------
    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise PrerequisiteError(
                "Java 17+ is needed to run the Kafka broker; install it with "
                "`apt-get install -y openjdk-17-jre-headless`"
            )
        return java

    def _prepare(self, node: KafkaNode, dist: Path) -> None:
        node.home.mkdir(parents=True, exist_ok=True)
        (node.home / "server.properties").write_text(self.server_properties(node))
        (node.home / "log4j2.properties").write_text(self.log4j2_properties(node))
        if (node.data_dir / "meta.properties").exists():
            return
        result = subprocess.run(
            [
                self._java(),
                "-cp",
                kafka_dist.classpath(dist),
                f"-Dlog4j2.configurationFile={node.home / 'log4j2.properties'}",
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                "-t",
                self._cluster_id(),
                "-c",
                str(node.home / "server.properties"),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")

    def start_node(self, node: KafkaNode) -> None:
        """Start one node (no-op if it already runs)."""
        if procs.read_pid(node.pid_file) is not None:
            return
        for port in (node.port, node.controller_port):
            if procs.port_open(self.settings.host, port):
                raise PortTakenError("kafka", port, "PANTHEON_KAFKA_PORT")
        dist = kafka_dist.fetch(self.settings.kafka_dist_dir, self.settings.kafka_version)
        self._prepare(node, dist)
        argv = [
            self._java(),
            f"-Xmx{JVM_HEAP}",
            f"-Xms{JVM_HEAP}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={node.home / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={node.home}",
            "-cp",
            kafka_dist.classpath(dist),
            "kafka.Kafka",
            str(node.home / "server.properties"),
        ]
        procs.spawn(argv, log_file=node.home / "stdout.log", pid_file=node.pid_file)

    def start(self, *, timeout: float = 90.0) -> None:
        """Start every node and wait until the cluster answers metadata requests."""
        for node in self.nodes:
            self.start_node(node)
        try:
            procs.wait_until(self.healthy, timeout=timeout, what="the Kafka cluster")
        except TimeoutError as exc:
            dead = [n for n in self.nodes if procs.read_pid(n.pid_file) is None]
            detail = "".join(
                f"\n--- node {n.node_id} ---\n{procs.tail(n.home / 'stdout.log')}"
                f"\n{procs.tail(n.log_file)}"
                for n in (dead or self.nodes)
            )
            raise StackError(f"{exc}{detail}") from exc

    def stop_node(self, node: KafkaNode, *, kill: bool = False) -> None:
        """Stop one node: SIGTERM (controlled shutdown), or SIGKILL when ``kill``."""
        pid = procs.read_pid(node.pid_file)
        if pid is None:
            return
        procs.stop_pid(pid, sig=signal.SIGKILL if kill else signal.SIGTERM, timeout=30.0)

    def stop(self) -> None:
        """Stop every node; signals go out together so no node waits for a lost quorum."""
        pids = [p for n in self.nodes if (p := procs.read_pid(n.pid_file)) is not None]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in pids:
            procs.stop_pid(pid, timeout=30.0)

    # -- health --------------------------------------------------------------------------
    def running(self) -> list[int]:
        """Node ids whose process is alive."""
        return [n.node_id for n in self.nodes if procs.read_pid(n.pid_file) is not None]

    def healthy(self, timeout: float = 2.0) -> bool:
        """True when every node's process runs and the cluster lists all of its brokers."""
        if len(self.running()) != len(self.nodes):
            return False
        return self.broker_count(timeout) == len(self.nodes)

    def broker_count(self, timeout: float = 2.0) -> int:
        """How many brokers the cluster's metadata lists (0 when unreachable)."""
        admin = AdminClient({"bootstrap.servers": self.settings.bootstrap_servers, "log_level": 0})
        try:
            return len(admin.list_topics(timeout=timeout).brokers)
        except Exception:
            return 0
