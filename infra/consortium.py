"""The local consortium: a genesis, and one validator process per institution.

``pantheon up`` calls :meth:`Consortium.up` after the stack: on first use it creates a genesis
for ``PANTHEON_INSTITUTIONS`` (default four) under ``<state>/consortium/`` with their keys
(0600), then starts every validator that is not running, in the background, each with its
own state directory (snapshots, vote journal, status file, log) and a metrics port that is
registered with the local Prometheus. ``status`` reads each validator's status file.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from infra import procs
from infra.errors import PortTakenError, StackError
from infra.keystore import create_genesis, load_genesis
from infra.prometheus_server import Prometheus
from infra.settings import Settings

DEFAULT_INSTITUTIONS = ("alpha", "beta", "gamma", "delta")
CHAIN_ID = "pantheon-local"
STALE_AFTER_MS = 5000


@dataclass(frozen=True, slots=True)
class ValidatorStatus:
    """One validator as ``pantheon status`` shows it."""

    name: str
    running: bool
    healthy: bool
    cut_height: int
    final_height: int
    detail: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def institutions_from_env() -> tuple[str, ...]:
    """Founding institutions of a new local consortium."""
    raw = os.environ.get("PANTHEON_INSTITUTIONS", "")
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    return names or DEFAULT_INSTITUTIONS


class Consortium:
    """The genesis and validators of the local chain."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.state_dir / "consortium"
        self.genesis_file = self.home / "genesis.avro"

    def institutions(self) -> list[str]:
        """Institutions of the genesis (empty before the first ``up``)."""
        if not self.genesis_file.exists():
            return []
        return [f.institution_id for f in load_genesis(self.genesis_file).founders]

    def ensure_genesis(self) -> list[str]:
        """Create the genesis on first use; return the institutions."""
        if not self.genesis_file.exists():
            create_genesis(self.home, CHAIN_ID, institutions_from_env(), block_interval_ms=500)
        return self.institutions()

    def _dir(self, institution: str) -> Path:
        return self.home / "validators" / f"{institution}-0"

    def metrics_port(self, index: int) -> int:
        """Metrics port of the ``index``-th validator: after Prometheus's port."""
        return self.settings.prom_port + 10 + index

    def up(self, prometheus: Prometheus) -> None:
        """Start every validator that does not run."""
        for index, institution in enumerate(self.ensure_genesis()):
            home = self._dir(institution)
            home.mkdir(parents=True, exist_ok=True)
            if procs.read_pid(home / "pid") is not None:
                continue
            port = self.metrics_port(index)
            if procs.port_open(self.settings.host, port):
                raise PortTakenError(f"validator {institution}", port, "PANTHEON_PROM_PORT")
            procs.spawn(
                [
                    sys.executable,
                    "-m",
                    "streams.validator",
                    "--genesis",
                    str(self.genesis_file),
                    "--keystore",
                    str(self.home / "keys" / f"{institution}.json"),
                    "--institution",
                    institution,
                    "--bootstrap",
                    self.settings.bootstrap_servers,
                    "--prefix",
                    self.settings.topic_prefix,
                    "--state-dir",
                    str(home),
                    "--metrics-port",
                    str(port),
                ],
                log_file=home / "validator.log",
                pid_file=home / "pid",
            )
            prometheus.register_target(
                f"validator-{institution}-0",
                port,
                {"service": "validator"},  # institution/operator come with the metrics
            )
        self.wait_healthy()

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
            logs = [self._dir(v.name.rsplit("-", 1)[0]) / "validator.log" for v in bad]
            detail = "".join(f"\n--- {log} ---\n{procs.tail(log)}" for log in logs)
            raise StackError(f"{exc}{detail}") from exc

    def down(self) -> None:
        """Stop every validator (SIGTERM: they flush and exit)."""
        pids = [
            pid
            for inst in self.institutions()
            if (pid := procs.read_pid(self._dir(inst) / "pid")) is not None
        ]
        for pid in pids:
            procs.stop_pid(pid, timeout=20)

    def status(self) -> list[ValidatorStatus]:
        """Each validator's heights and health."""
        out = []
        now_ms = time.time_ns() // 1_000_000
        for inst in self.institutions():
            home = self._dir(inst)
            running = procs.read_pid(home / "pid") is not None
            try:
                doc = json.loads((home / "status.json").read_text())
            except (OSError, ValueError):
                doc = {}
            fresh = now_ms - int(doc.get("updated_ms", 0)) < STALE_AFTER_MS
            diverged = bool(doc.get("diverged"))
            healthy = running and fresh and not diverged
            detail = (
                "DIVERGED: stopped voting, see validator.log"
                if diverged
                else ("" if fresh or not running else "status not updated for 5s")
            )
            out.append(
                ValidatorStatus(
                    name=f"{inst}-0",
                    running=running,
                    healthy=healthy,
                    cut_height=int(doc.get("cut_height", 0)),
                    final_height=int(doc.get("final_height", 0)),
                    detail=detail or str(home / "validator.log"),
                )
            )
        return out
