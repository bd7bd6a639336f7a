"""The local stack: Kafka (KRaft), PostgreSQL and Prometheus, plus the ledger topics.

``up`` is idempotent: a service that already runs healthy is left alone, one that is
missing is started (Kafka, PostgreSQL and Prometheus side by side), and the topics are
created only when absent. ``down`` stops whatever runs, the consortium's processes first and
then the three servers together, and is a no-op when nothing does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass

from confluent_kafka.admin import AdminClient

from infra import kafka_acl, procs
from infra.consortium import Consortium
from infra.errors import StackError
from infra.kafka_server import KafkaCluster
from infra.postgres_server import Postgres
from infra.prometheus_server import Prometheus
from infra.rollback import Rollback, UpFailed, UpInterrupted, shielded
from infra.service_health import ValidatorStatus
from infra.settings import Settings
from projections.projector import database_name
from runtime.kafka_config import admin_config, use_credentials
from runtime.topics import ensure_topics

log = logging.getLogger(__name__)

# How long `up` waits for started processes to answer: minutes on a loaded machine (a CI
# runner next to other work), seconds on a quiet one.
STARTUP_TIMEOUT = 180.0

STACK_SERVICES = ("kafka", "postgres", "prometheus")
"""The servers of the stack itself (the consortium's processes: ``consortium.SERVICES``)."""


@dataclass(frozen=True, slots=True)
class ProjectorStatus:
    """What ``pantheon status`` reports for one projector."""

    name: str
    running: bool
    healthy: bool
    height: int | None
    database: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """What ``pantheon status`` reports for one service."""

    name: str
    running: bool
    healthy: bool
    address: str
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _called_off(future: Future[float]) -> bool:
    return isinstance(future.exception(), procs.Cancelled)


class Stack:
    """The services of one local stack, described by ``settings``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kafka = KafkaCluster(settings)
        self.postgres = Postgres(settings)
        self.prometheus = Prometheus(settings)
        self.consortium = Consortium(settings)

    def up(self, *, consortium: bool = True) -> dict[str, float]:
        """Start what is not running, create missing topics, then (unless ``consortium`` is
        false) the validators of the local consortium; return seconds per step.

        With broker access control (D26) this process acts as the Kafka super user, creates
        every principal and ACL, and starts each process as its own principal.

        When it fails or is interrupted, it stops what it started in this call (not what an
        earlier ``up`` left running) and raises :class:`UpFailed` (or :class:`UpInterrupted`)
        saying so (D60)."""
        self.settings.record()  # later commands, in any shell, find this stack (D36)
        rollback = Rollback(self.settings)
        procs.allow_starts()
        try:
            with use_credentials(kafka_acl.credentials(self.settings, kafka_acl.ADMIN)):
                return self._up(consortium)
        except BaseException as exc:
            procs.call_off_starts()  # a start still in flight in another thread ends
            try:
                with shielded():
                    stopped = rollback.undo()
            finally:
                procs.allow_starts()
            if isinstance(exc, Exception):
                raise UpFailed(exc, stopped) from exc
            if isinstance(exc, KeyboardInterrupt):
                raise UpInterrupted(stopped) from exc
            raise

    def _up(self, consortium: bool) -> dict[str, float]:
        timings = self._start_servers()
        began = time.monotonic()
        institutions = self.consortium.ensure_genesis() if consortium else []
        admin = AdminClient(admin_config(self.settings.bootstrap_servers))
        created = ensure_topics(admin, prefix=self.settings.topic_prefix, institutions=institutions)
        if self.kafka.secure:
            kafka_acl.ensure(admin, self.settings, institutions)
        timings["topics"] = time.monotonic() - began
        if created:
            log.info("created topics %s", ", ".join(created))
        if consortium:
            began = time.monotonic()
            self.consortium.up(self.prometheus, self.postgres)
            self._wait_started(
                lambda: all(p.healthy for p in self.projectors()),
                "the projectors to create and migrate their databases",
                service="projector",
            )
            self._wait_started(
                lambda: all(ok for _, ok, _ in self.consortium.gateways().values()),
                "the gateways to answer /healthz",
                service="gateway",
            )
            self.consortium.register_iam_keys(self.postgres)  # their gateways sign with them
            self.consortium.start_batchers(self.prometheus, self.postgres)
            self.consortium.start_auditors(self.prometheus, self.postgres)
            timings["validators"] = time.monotonic() - began
        return timings

    def _start_servers(self) -> dict[str, float]:
        """Start Kafka, PostgreSQL and Prometheus side by side (they do not depend on one
        another, and each mostly waits for its process to come up); seconds per server.
        The first failure, in this order, is raised once every start has ended: a failure
        (or an interrupt) calls the others off, so they end at their next step (D60)."""
        servers: dict[str, Callable[[], None]] = {
            "kafka": self.kafka.start,
            "postgres": self.postgres.start,
            "prometheus": self.prometheus.start,
        }

        def timed(name: str, start: Callable[[], None]) -> float:
            began = time.monotonic()
            log.info("starting %s", name)
            start()
            return time.monotonic() - began

        pool = ThreadPoolExecutor(max_workers=len(servers))
        try:
            futures = {name: pool.submit(timed, name, start) for name, start in servers.items()}
            if wait(futures.values(), return_when=FIRST_EXCEPTION).not_done:
                procs.call_off_starts()  # one failed: the others need not finish starting
        except BaseException:
            procs.call_off_starts()
            raise
        finally:
            pool.shutdown(wait=True)
        failed = [f for f in futures.values() if f.exception() and not _called_off(f)]
        for future in failed or list(futures.values()):
            future.result()
        return {name: future.result() for name, future in futures.items()}

    def _wait_started(self, ready: Callable[[], bool], what: str, *, service: str) -> None:
        """Wait until ``ready``, up to STARTUP_TIMEOUT; a process of ``service`` that dies
        meanwhile ends the wait at once with a StackError naming its log."""

        def check() -> bool:
            for inst in self.consortium.institutions():
                pid_file = self.consortium.service_pid_file(service, inst)
                if procs.read_pid(pid_file) is None:
                    log_file = pid_file.parent / f"{service}.log"
                    raise StackError(
                        f"the {service} of {inst} exited while starting; see {log_file}"
                    )
            return ready()

        procs.wait_until(check, timeout=STARTUP_TIMEOUT, what=what)

    def down(self) -> None:
        """Stop everything that runs: the consortium's processes, then the three servers
        together (each waits only for its own process to exit)."""
        self.consortium.down()
        with ThreadPoolExecutor(max_workers=3) as pool:
            stops = [
                pool.submit(s) for s in (self.prometheus.stop, self.postgres.stop, self.kafka.stop)
            ]
            wait(stops)
        for done in stops:
            done.result()

    def stop_service(self, service: str, institutions: Sequence[str]) -> list[str]:
        """Stop one kind of process (of ``institutions``, for a per-institution service);
        what was done, one line each."""
        if service in STACK_SERVICES:
            stops: dict[str, Callable[[], None]] = {
                "kafka": self.kafka.stop,
                "postgres": self.postgres.stop,
                "prometheus": self.prometheus.stop,
            }
            stops[service]()
            return [f"{service} stopped"]
        done = []
        for inst in institutions:
            pid = self.consortium.stop_service(service, inst)
            state = f"stopped (pid {pid})" if pid is not None else "was not running"
            done.append(f"{service} of {inst} {state}")
        return done

    def start_service(self, service: str, institutions: Sequence[str]) -> list[str]:
        """Start one kind of process unless it runs and wait until it is healthy; what was
        done, one line each."""
        with use_credentials(kafka_acl.credentials(self.settings, kafka_acl.ADMIN)):
            if service in STACK_SERVICES:
                starts = {
                    "kafka": self.kafka.start,
                    "postgres": self.postgres.start,
                    "prometheus": self.prometheus.start,
                }
                starts[service]()
                return [f"{service} running"]
            return [
                f"{service} of {inst} running (pid "
                f"{self.consortium.start_service(service, inst, self.prometheus, self.postgres)})"
                for inst in institutions
            ]

    def projectors(self) -> list[ProjectorStatus]:
        """Each institution's projector: running, and the height its database reached."""
        running = self.consortium.projectors_running()
        heights = self.consortium.projector_heights(self.postgres) if any(running.values()) else {}
        return [
            ProjectorStatus(
                name=inst,
                running=alive,
                healthy=alive and heights.get(inst) is not None,
                height=heights.get(inst),
                database=database_name(inst),
            )
            for inst, alive in running.items()
        ]

    def validators(self) -> list[ValidatorStatus]:
        """Heights and health of the consortium's validators."""
        return self.consortium.status()

    def status(self) -> list[ServiceStatus]:
        """Which services run, where they listen, and whether they answer."""
        s = self.settings
        kafka_running = self.kafka.running()
        brokers = self.kafka.broker_count(timeout=2.0) if kafka_running else 0
        return [
            ServiceStatus(
                "kafka",
                bool(kafka_running),
                brokers == len(self.kafka.nodes),
                s.bootstrap_servers,
                f"{len(kafka_running)}/{len(self.kafka.nodes)} nodes running, "
                f"{brokers} brokers answering, Kafka {s.kafka_version}"
                + (", SASL/SCRAM + ACLs" if self.kafka.secure else ""),
            ),
            ServiceStatus(
                "postgres",
                self.postgres.pid() is not None,
                self.postgres.healthy(),
                f"postgresql://pantheon@{s.host}:{s.pg_port}/pantheon",
                f"password in {self.postgres.password_file}",
            ),
            ServiceStatus(
                "prometheus",
                self.prometheus.running(),
                self.prometheus.healthy(),
                self.prometheus.url,
            ),
        ]
