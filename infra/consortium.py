"""The local consortium: a genesis, and one validator process per operator.

``pantheon up`` calls :meth:`Consortium.up` after the stack: on first use it creates a genesis
for ``PANTHEON_INSTITUTIONS`` (default four) under ``<state>/consortium/`` with their keys
(0600) and :attr:`Consortium.operators` operator keys each (``pantheon up --operators N``,
default 1), then starts every validator that is not running, in the background, one per
operator (``validators/<institution>-<k>``), each with its own state directory (snapshots,
vote journal, status file, log) and a metrics port that is registered with the local
Prometheus. ``status`` reads each validator's status file.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from gateway.auth.crypto import create_master_key_file, load_master_key
from gateway.iam.bootstrap import ensure_setup_credential
from infra import kafka_acl, procs
from infra.errors import PortTakenError, StackError
from infra.keystore import create_genesis, generate_key, load_genesis, load_key
from infra.postgres_server import Postgres
from infra.prometheus_server import Prometheus
from infra.service_argv import gateway_argv, validator_argv
from infra.service_health import (
    ValidatorStatus,
    gateway_answers,
    projected_height,
    read_status,
    wait_started,
)
from infra.service_keys import register_service_key
from infra.settings import Settings, audit_every, institutions_from_env
from projections.projector import database_name

SERVICES = ("validator", "projector", "gateway", "batcher", "auditor")
"""The processes ``up`` starts for each institution."""


CHAIN_ID = "pantheon-local"


class Consortium:
    """The genesis and validators of the local chain."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.state_dir / "consortium"
        self.genesis_file = self.home / "genesis.avro"
        #: Operators to run per institution (``--operators``); None: every operator key of
        #: the keystores (a new genesis then gets one per institution).
        self.operators: int | None = None

    def institutions(self) -> list[str]:
        """Institutions of the genesis (empty before the first ``up``)."""
        if not self.genesis_file.exists():
            return []
        return [f.institution_id for f in load_genesis(self.genesis_file).founders]

    def genesis_hash(self) -> str | None:
        """The genesis hash (hex): the explorer's trust anchor (D49); None before ``up``."""
        if not self.genesis_file.exists():
            return None
        return load_genesis(self.genesis_file).hash().hex()

    def ensure_genesis(self) -> list[str]:
        """Create the genesis on first use; return the institutions."""
        if not self.genesis_file.exists():
            create_genesis(
                self.home,
                CHAIN_ID,
                institutions_from_env(),
                operators_per_institution=self.operators or 1,
                block_interval_ms=500,
            )
        return self.institutions()

    def operator_keys(self, institution: str) -> int:
        """How many operator keys ``institution``'s keystore holds."""
        doc = json.loads((self.home / "keys" / f"{institution}.json").read_text())
        return len(doc["operators"])

    def _operators_to_run(self, institution: str) -> int:
        held = self.operator_keys(institution)
        if self.operators is not None and self.operators > held:
            raise StackError(
                f"--operators {self.operators}: the genesis of this state directory gave "
                f"{institution} {held} operator key(s); run with --operators {held} or fewer, "
                "or start a new state directory (PANTHEON_STATE_DIR)"
            )
        return self.operators if self.operators is not None else held

    def _nodes(self) -> list[tuple[str, int]]:
        """(institution, operator) of every validator that was ever started (operator 0
        always)."""
        return [
            (inst, k)
            for inst in self.institutions()
            for k in range(self.operator_keys(inst))
            if k == 0 or self._dir(inst, k).exists()
        ]

    def _env(self, principal: str, postgres: Postgres | None = None) -> dict[str, str]:
        """A spawned process's environment: its own Kafka principal (D26) and, for those
        that use PostgreSQL, its password (secrets never on a command line, not in `ps`)."""
        env = kafka_acl.child_env(self.settings, principal, dict(os.environ))
        return env if postgres is None else {**env, "PGPASSWORD": postgres.password()}

    def _dir(self, institution: str, operator: int = 0) -> Path:
        return self.home / "validators" / f"{institution}-{operator}"

    def up(self, prometheus: Prometheus, postgres: Postgres) -> None:
        """Start every validator, projector and gateway that does not run (each checked on
        its own: a running validator says nothing about its institution's gateway)."""
        for index, institution in enumerate(self.ensure_genesis()):
            for operator in range(self._operators_to_run(institution)):
                self._start_validator(institution, operator, prometheus)
            self._start_projector(index, institution, prometheus, postgres)
            self._start_gateway(index, institution, prometheus, postgres)
        self.wait_healthy()

    def _start_validator(self, institution: str, operator: int, prometheus: Prometheus) -> None:
        home = self._dir(institution, operator)
        home.mkdir(parents=True, exist_ok=True)
        if procs.read_pid(home / "pid") is None:
            port = procs.free_port(self.settings.host)
            procs.spawn(
                validator_argv(
                    self.settings,
                    self.home,
                    institution,
                    operator=operator,
                    state_dir=home,
                    metrics_port=port,
                ),
                log_file=home / "validator.log",
                pid_file=home / "pid",
                env=self._env(kafka_acl.operator_principal(institution)),
            )
            prometheus.register_target(
                f"validator-{institution}-{operator}",
                port,
                {"service": "validator"},  # institution/operator come with the metrics
            )

    def _projector_dir(self, institution: str) -> Path:
        return self.home / "projectors" / institution

    def _start_projector(
        self, index: int, institution: str, prometheus: Prometheus, postgres: Postgres
    ) -> None:
        self._spawn(
            "projector",
            "projections.projector",
            institution,
            ["--institution", institution, "--dsn", self._server_dsn()],
            prometheus=prometheus,
            postgres=postgres,
        )

    def _spawn(
        self,
        service: str,
        module: str,
        institution: str,
        args: list[str],
        *,
        prometheus: Prometheus,
        postgres: Postgres,
        labels: dict[str, str] | None = None,
    ) -> None:
        """Start ``python -m module`` for ``institution`` unless its pid file names a live
        process: the stack's genesis, brokers and prefix, ``args``, a metrics port that
        Prometheus is told of (label ``service``, and ``labels`` for metrics that do not
        carry their institution), the institution's Kafka principal and the database
        password in the environment."""
        home = self.service_pid_file(service, institution).parent
        home.mkdir(parents=True, exist_ok=True)
        if procs.read_pid(home / "pid") is not None:
            return
        port = procs.free_port(self.settings.host)
        s = self.settings
        common = ["--genesis", str(self.genesis_file), "--bootstrap", s.bootstrap_servers]
        common += ["--prefix", s.topic_prefix]
        procs.spawn(
            [sys.executable, "-m", module, *common, *args, "--metrics-port", str(port)],
            log_file=home / f"{service}.log",
            pid_file=home / "pid",
            env=self._env(kafka_acl.institution_principal(institution), postgres),
        )
        target = {"service": service, **(labels or {})}
        prometheus.register_target(f"{service}-{institution}", port, target)

    def _gateway_dir(self, institution: str) -> Path:
        return self.home / "gateways" / institution

    def gateway_port(self, institution: str) -> int:
        """The gateway port of ``institution``: PANTHEON_GATEWAY_PORT plus its index."""
        return self.settings.gateway_port + self.institutions().index(institution)

    def _start_gateway(
        self, index: int, institution: str, prometheus: Prometheus, postgres: Postgres
    ) -> None:
        home = self._gateway_dir(institution)
        home.mkdir(parents=True, exist_ok=True)
        if procs.read_pid(home / "pid") is not None:
            return
        port = self.settings.gateway_port + index
        if procs.port_open(self.settings.host, port):
            raise PortTakenError(f"gateway {institution}", port, "PANTHEON_GATEWAY_PORT")
        if not self.master_key_file(institution).exists():
            create_master_key_file(self.master_key_file(institution))
        if not self.iam_key_file(institution).exists():
            generate_key(self.iam_key_file(institution))
        procs.spawn(
            gateway_argv(
                self.settings,
                self.home,
                institution,
                port=port,
                master_key_file=self.master_key_file(institution),
                iam_key_file=self.iam_key_file(institution),
            ),
            log_file=home / "gateway.log",
            pid_file=home / "pid",
            env=self._env(kafka_acl.institution_principal(institution), postgres),
        )
        prometheus.register_target(f"gateway-{institution}", port, {"service": "gateway"})

    def _batcher_dir(self, institution: str) -> Path:
        return self.home / "batchers" / institution

    def batcher_key(self, institution: str, postgres: Postgres) -> Path:
        """The batcher's SERVICE key of ``institution``: created once, registered on chain
        (``RegisterIdentity`` signed by the institution's governance key) if it is not yet."""
        path = self._batcher_dir(institution) / "service-key.json"
        self._ensure_service_key(institution, path, "batcher", postgres)
        return path

    def _ensure_service_key(
        self, institution: str, path: Path, label: str, postgres: Postgres
    ) -> None:
        """Create the key file at ``path`` on first use and register it on chain."""
        if not path.exists():
            generate_key(path)
        service = load_key(path)
        register_service_key(
            self.settings, self.home, institution, service=service, label=label, postgres=postgres
        )

    def iam_key_file(self, institution: str) -> Path:
        """The institution's IAM SERVICE key (0600): signs every event on its IAM topic
        (D21). Created with the gateway, registered on chain by :meth:`register_iam_keys`."""
        return self.home / "iam" / institution / "iam-key.json"

    def register_iam_keys(self, postgres: Postgres) -> None:
        """Register each institution's IAM key on chain unless it is (its gateway's IAM
        commands wait for it: an unregistered key signs nothing)."""
        for institution in self.institutions():
            self._ensure_service_key(institution, self.iam_key_file(institution), "iam", postgres)

    def start_batchers(self, prometheus: Prometheus, postgres: Postgres) -> None:
        """Start each institution's Layer-2 batcher (after its projector runs)."""
        for institution in self.institutions():
            self._start_batcher(institution, prometheus, postgres)

    def _start_batcher(self, institution: str, prometheus: Prometheus, postgres: Postgres) -> None:
        if procs.read_pid(self.service_pid_file("batcher", institution)) is not None:
            return  # (before the key: registering one costs a transaction)
        key = self.batcher_key(institution, postgres)
        args = ["--institution", institution, "--key", str(key), "--dsn", self._server_dsn()]
        args += ["--instance-id", f"{institution}-0"]
        self._spawn(
            "batcher",
            "readers.batcher",
            institution,
            args,
            prometheus=prometheus,
            postgres=postgres,
        )

    def _auditor_dir(self, institution: str) -> Path:
        return self.home / "auditors" / institution

    def start_auditors(self, prometheus: Prometheus, postgres: Postgres) -> None:
        """Start each institution's continuous auditor (``pantheon audit --every``), whose
        ``pantheon_audit_*`` metrics Prometheus scrapes: the AuditDiscrepancy alert's data."""
        for institution in self.institutions():
            self._start_auditor(institution, prometheus, postgres)

    def _start_auditor(self, institution: str, prometheus: Prometheus, postgres: Postgres) -> None:
        args = ["--institution", institution, "--dsn", self._server_dsn()]
        args += ["--every", str(audit_every()), "--quiet", "--no-progress"]
        args += ["--workers", "0"]  # one core: this machine runs the whole consortium
        self._spawn(
            "auditor",
            "readers.audit",
            institution,
            args,
            prometheus=prometheus,
            postgres=postgres,
            labels={"institution": institution},  # the audit's metrics do not name it
        )

    def _server_dsn(self) -> str:
        return f"host={self.settings.host} port={self.settings.pg_port} user=pantheon"

    # -- one service at a time: pantheon stop|start|restart SERVICE [--institution X] -------
    def service_pid_file(self, service: str, institution: str) -> Path:
        """The pid file of ``service`` (one of :data:`SERVICES`) of ``institution``."""
        homes = {
            "validator": self._dir,
            "projector": self._projector_dir,
            "gateway": self._gateway_dir,
            "batcher": self._batcher_dir,
            "auditor": self._auditor_dir,
        }
        return homes[service](institution) / "pid"

    def stop_service(self, service: str, institution: str) -> int | None:
        """Stop one service (SIGTERM, then SIGKILL after 20 s; a validator: every operator of
        the institution); a pid it stopped, or None if none ran."""
        if service == "validator":  # every operator of the institution that was started
            pids = [
                procs.read_pid(self._dir(inst, k) / "pid")
                for inst, k in self._nodes()
                if inst == institution
            ]
        else:
            pids = [procs.read_pid(self.service_pid_file(service, institution))]
        for pid in pids:
            if pid is not None:
                procs.stop_pid(pid, timeout=20)
        return next((pid for pid in pids if pid is not None), None)

    def start_service(
        self, service: str, institution: str, prometheus: Prometheus, postgres: Postgres
    ) -> int:
        """Start one process unless it runs, wait until it is healthy; its pid."""
        index = self.institutions().index(institution)
        if service == "validator":
            for inst, operator in self._nodes():
                if inst == institution:
                    self._start_validator(institution, operator, prometheus)
        elif service == "projector":
            self._start_projector(index, institution, prometheus, postgres)
        elif service == "gateway":
            self._start_gateway(index, institution, prometheus, postgres)
        elif service == "batcher":
            self._start_batcher(institution, prometheus, postgres)
        else:
            self._start_auditor(institution, prometheus, postgres)
        pid_file = self.service_pid_file(service, institution)
        checks: dict[str, Callable[[], bool]] = {
            "validator": lambda: any(
                v.healthy for v in self.status() if v.name == f"{institution}-0"
            ),
            "projector": lambda: self.projector_heights(postgres).get(institution) is not None,
            "gateway": lambda: self.gateways()[institution][1],
        }
        return wait_started(pid_file, checks.get(service), f"the {service} of {institution}")

    def running(self, service: str) -> dict[str, bool]:
        """Whether each institution's ``service`` process is alive."""
        return {
            inst: procs.read_pid(self.service_pid_file(service, inst)) is not None
            for inst in self.institutions()
        }

    def gateways(self) -> dict[str, tuple[bool, bool, str]]:
        """Per institution: (running, answering /healthz, URL)."""
        out: dict[str, tuple[bool, bool, str]] = {}
        for inst in self.institutions():
            url = f"http://{self.settings.host}:{self.gateway_port(inst)}"
            running = procs.read_pid(self._gateway_dir(inst) / "pid") is not None
            out[inst] = (running, running and gateway_answers(url), url)
        return out

    def projector_heights(self, postgres: Postgres) -> dict[str, int | None]:
        """Projected height per institution (None when its database cannot be read)."""
        return {
            inst: projected_height(postgres.dsn(database_name(inst)))
            for inst in self.institutions()
        }

    def master_key_file(self, institution: str) -> Path:
        """The institution's IAM master key (0600). It seals the key-encryption key ``kek`` in
        the same directory (created by the gateway; D25), which wraps the users' data keys."""
        return self.home / "iam" / institution / "master.key"

    def iam_setup(self, postgres: Postgres) -> dict[str, str | None]:
        """Per institution: a fresh one-time setup credential for its first administrator,
        or None once it has one. Creates the institution's IAM master key on first use."""
        credentials: dict[str, str | None] = {}
        for inst in self.institutions():
            if not self.master_key_file(inst).exists():
                create_master_key_file(self.master_key_file(inst))
            credentials[inst] = ensure_setup_credential(
                postgres.dsn(database_name(inst)), inst, load_master_key(self.master_key_file(inst))
            )
        return credentials

    def projectors_running(self) -> dict[str, bool]:
        """Whether each institution's projector process is alive."""
        return self.running("projector")

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Wait until every validator runs and reports; StackError naming the laggards."""
        try:
            procs.wait_until(
                lambda: all(v.healthy for v in self.status()),
                timeout=timeout,
                what="the validators to report",
            )
        except TimeoutError as exc:
            bad = [v for v in self.status() if not v.healthy]
            logs = [self.home / "validators" / v.name / "validator.log" for v in bad]
            detail = "".join(f"\n--- {log} ---\n{procs.tail(log)}" for log in logs)
            raise StackError(f"{exc}; see {', '.join(map(str, logs))}{detail}") from exc

    def down(self) -> None:
        """Stop every gateway, projector and validator (SIGTERM to all at once: they flush
        and exit)."""
        homes = [
            home
            for inst in self.institutions()
            for home in (
                self._auditor_dir(inst),
                self._batcher_dir(inst),
                self._gateway_dir(inst),
                self._projector_dir(inst),
            )
        ]
        homes += [self._dir(inst, k) for inst, k in self._nodes()]
        pids = [pid for home in homes if (pid := procs.read_pid(home / "pid")) is not None]
        procs.stop_pids(pids, timeout=20)

    def status(self) -> list[ValidatorStatus]:
        """Each validator's heights and health."""
        now_ms = time.time_ns() // 1_000_000
        return [read_status(f"{inst}-{k}", self._dir(inst, k), now_ms) for inst, k in self._nodes()]
