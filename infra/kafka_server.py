"""A local Apache Kafka cluster in KRaft mode: 1 or 3 combined broker+controller nodes.

Each node ``i`` (1-based) has ``<state>/kafka/node-<i>/`` with its generated
``server.properties``, ``log4j2.properties``, ``data/`` (formatted once with the cluster's
id), ``server.log`` and ``pid``. All listeners are on loopback. With 3 nodes the cluster
uses replication factor 3, ``min.insync.replicas=2`` and no unclean leader election, the
settings DESIGN.md section 3 asks of production.

With broker access control (:mod:`infra.kafka_acl`, D26) the client listener is
``SASL_PLAINTEXT`` with SCRAM-SHA-512 (brokers replicate over it as ``admin``), the
controller listener ``SASL_PLAINTEXT`` with PLAIN and one static user, ``admin`` (KRaft
controllers cannot check SCRAM: its credentials live in the metadata they serve), the
``StandardAuthorizer`` decides every request with ``allow.everyone.if.no.acl.found=false``,
and ``admin`` is the only super user. Its SCRAM credential is written into the metadata at
format time (``--add-scram``, passed in a 0600 argument file: never on a command line);
``server.properties`` holds the admin password and is 0600.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from infra import kafka_acl, kafka_dist, procs
from infra.errors import PortTakenError, PrerequisiteError, StackError
from infra.settings import Settings
from runtime.kafka_config import admin_config, use_credentials

log = logging.getLogger(__name__)

JVM_HEAP = os.environ.get("PANTHEON_KAFKA_HEAP", "512m")
JIT_C1_ONLY = "-XX:TieredStopAtLevel=1"
"""The broker's JIT compiles with C1 only (D69): a fresh broker's C2 compiler otherwise
takes half a core for minutes, on a host it shares with the validators."""


def jvm_options(extra: str = os.environ.get("PANTHEON_KAFKA_JVM_OPTS", "")) -> list[str]:
    """The broker's JVM options: the defaults, then ``extra`` (``PANTHEON_KAFKA_JVM_OPTS``,
    split on spaces), which wins where it repeats one (the JVM takes the last), for example
    ``-XX:TieredStopAtLevel=4`` on a broker with a host of its own."""
    return [f"-Xmx{JVM_HEAP}", f"-Xms{JVM_HEAP}", "-XX:+UseG1GC", JIT_C1_ONLY, *extra.split()]


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
        if self.secure:
            lines.update(self._secure_properties(node))
        return "".join(f"{k}={v}\n" for k, v in lines.items())

    @property
    def secure(self) -> bool:
        """Whether the brokers require SASL and ACLs (D26)."""
        return kafka_acl.enabled(self.settings)

    def _secure_properties(self, node: KafkaNode) -> dict[str, str]:
        host = self.settings.host
        admin = kafka_acl.ADMIN
        secret = kafka_acl.password(self.settings, admin)
        scram = f'username="{admin}" password="{secret}";'
        plain = f'username="{admin}" password="{secret}" user_{admin}="{secret}";'
        return {
            "listeners": f"SASL_PLAINTEXT://{host}:{node.port},CONTROLLER://{host}:{node.controller_port}",
            "advertised.listeners": f"SASL_PLAINTEXT://{host}:{node.port}",
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "listener.security.protocol.map": (
                "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
            ),
            "sasl.enabled.mechanisms": kafka_acl.MECHANISM,
            "sasl.mechanism.inter.broker.protocol": kafka_acl.MECHANISM,
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": (
                f"org.apache.kafka.common.security.scram.ScramLoginModule required {scram}"
            ),
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain}"
            ),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{admin}",
            "allow.everyone.if.no.acl.found": "false",
        }

    def admin_client_config(self) -> dict[str, Any]:
        """An admin client's settings: the super user when the brokers require SASL, else
        plaintext (whatever credentials the environment may name)."""
        creds = kafka_acl.credentials(self.settings, kafka_acl.ADMIN)
        if creds is None:
            return {"bootstrap.servers": self.settings.bootstrap_servers, "log_level": 0}
        with use_credentials(creds):
            return admin_config(self.settings.bootstrap_servers, log_level=0)

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
        formatted = (node.data_dir / "meta.properties").exists()
        was_secure = kafka_acl.password_file(self.settings, kafka_acl.ADMIN).exists()
        if formatted and self.settings.kafka_auth and not was_secure:
            raise StackError(
                f"the Kafka state in {self.root} was formatted without --kafka-auth; "
                f"stop the stack and remove {self.root} (its topics are lost) to switch"
            )
        props = node.home / "server.properties"
        props.touch(mode=0o600)
        props.chmod(0o600)  # holds the admin password in the secure mode
        props.write_text(self.server_properties(node))
        (node.home / "log4j2.properties").write_text(self.log4j2_properties(node))
        if formatted:
            return
        args = [
            "kafka.tools.StorageTool",
            "format",
            "--ignore-formatted",
            "-t",
            self._cluster_id(),
            "-c",
            str(props),
        ]
        if self.secure:
            secret = kafka_acl.password(self.settings, kafka_acl.ADMIN)
            args += [
                "--add-scram",
                f"{kafka_acl.MECHANISM}=[name={kafka_acl.ADMIN},password={secret}]",
            ]
        # The java launcher reads the main class and its arguments from an @file (0600,
        # removed afterwards), so the admin password is never on a command line.
        argfile = node.home / "format.args"
        argfile.unlink(missing_ok=True)
        fd = os.open(argfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(f'"{a}"\n' for a in args))
        try:
            result = subprocess.run(
                [
                    self._java(),
                    "-cp",
                    kafka_dist.classpath(dist),
                    f"-Dlog4j2.configurationFile={node.home / 'log4j2.properties'}",
                    f"@{argfile}",
                ],
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
        finally:
            argfile.unlink(missing_ok=True)
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
            *jvm_options(),
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
            logs = ", ".join(str(n.log_file) for n in (dead or self.nodes))
            raise StackError(f"{exc}; see {logs}{detail}") from exc

    def stop_node(self, node: KafkaNode, *, kill: bool = False) -> None:
        """Stop one node: SIGTERM (controlled shutdown), or SIGKILL when ``kill``."""
        pid = procs.read_pid(node.pid_file)
        if pid is None:
            return
        procs.stop_pid(pid, sig=signal.SIGKILL if kill else signal.SIGTERM, timeout=30.0)

    def stop(self) -> None:
        """Stop every node; signals go out together so no node waits for a lost quorum.

        Every node directory on disk counts, not only the nodes ``settings`` names: a cluster
        started with ``--brokers 3`` is stopped whole whatever the environment says now."""
        pid_files = {n.pid_file for n in self.nodes} | set(self.root.glob("node-*/pid"))
        pids = [p for f in sorted(pid_files) if (p := procs.read_pid(f)) is not None]
        procs.stop_pids(pids, timeout=30.0)

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
        admin = AdminClient(self.admin_client_config())
        try:
            return len(admin.list_topics(timeout=timeout).brokers)
        except Exception:
            return 0
