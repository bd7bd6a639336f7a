"""A project-local Prometheus: its own config, data directory and loopback port.

Scrape targets are discovered from ``<state>/prometheus/targets/*.json`` (Prometheus
file service discovery), so every Pantheon process the stack starts registers itself by
writing one small file; Prometheus picks changes up without a restart. Alert rules
(``infra/alerts/*.yml``, see ``infra/prometheus_config.py``) are copied into
``<state>/prometheus/rules/`` at start and loaded with ``rule_files``.

The lifecycle API (``--web.enable-lifecycle``: ``POST /-/quit``, ``/-/reload``) is *not*
enabled: it has no authentication, so any local user could stop the server. Configuration
and rules are reloaded with SIGHUP (:meth:`Prometheus.reload`), which only the user running
the stack (or root) can send. A server still running with the flag from an older version is
restarted by :meth:`Prometheus.start`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

from infra import procs
from infra.errors import PortTakenError, PrerequisiteError, StackError
from infra.prometheus_config import install_rules
from infra.settings import Settings

LIFECYCLE_FLAG = "--web.enable-lifecycle"


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")


def find_binary() -> str:
    """Path of the ``prometheus`` server binary."""
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if found is None:
        raise PrerequisiteError(
            "Prometheus not found; install it with "
            "`apt-get install -y --no-install-recommends prometheus` (or run ./dev up)"
        )
    return found


class Prometheus:
    """Start, stop and inspect the local Prometheus server."""

    def __init__(self, settings: Settings, *, interval: str = "5s") -> None:
        """``interval``: how often a server this starts scrapes its targets, evaluates its
        rules and re-reads its target files (a test's private server asks for less)."""
        self.settings = settings
        self.interval = interval
        self.home = settings.state_dir / "prometheus"
        self.targets_dir = self.home / "targets"
        self.rules_dir = self.home / "rules"
        self.pid_file = self.home / "pid"
        self.log_file = self.home / "server.log"

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.prom_port}"

    def config(self) -> str:
        """prometheus.yml: itself, plus every target file under ``targets/``."""
        return "\n".join(
            [
                "global:",
                f"  scrape_interval: {self.interval}",
                f"  evaluation_interval: {self.interval}",
                "rule_files:",
                f"  - '{self.rules_dir}/*.yml'",
                "scrape_configs:",
                "  - job_name: prometheus",
                "    static_configs:",
                f"      - targets: ['{self.settings.host}:{self.settings.prom_port}']",
                "  - job_name: pantheon",
                "    file_sd_configs:",
                f"      - files: ['{self.targets_dir}/*.json']",
                f"        refresh_interval: {self.interval}",
                "",
            ]
        )

    def register_target(self, name: str, port: int, labels: dict[str, str]) -> None:
        """Announce a process's /metrics endpoint to Prometheus."""
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        entry = [{"targets": [f"{self.settings.host}:{port}"], "labels": labels}]
        tmp = self.targets_dir / f".{name}.json.tmp"
        tmp.write_text(json.dumps(entry))
        tmp.replace(self.targets_dir / f"{name}.json")

    def start(self, *, timeout: float = 60.0) -> None:
        """Start Prometheus (no-op if it runs) and wait until it is ready."""
        pid = procs.read_pid(self.pid_file)
        if pid is not None and LIFECYCLE_FLAG in _cmdline(pid):
            procs.stop_pid(pid, timeout=30.0)  # an unauthenticated /-/quit: not any more
        if procs.read_pid(self.pid_file) is None:
            if procs.port_open(self.settings.host, self.settings.prom_port):
                raise PortTakenError("prometheus", self.settings.prom_port, "PANTHEON_PROM_PORT")
            binary = find_binary()
            self.targets_dir.mkdir(parents=True, exist_ok=True)
            install_rules(self.rules_dir)
            (self.home / "prometheus.yml").write_text(self.config())
            argv = [
                binary,
                f"--config.file={self.home / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.home / 'data'}",
                f"--web.listen-address={self.settings.host}:{self.settings.prom_port}",
                "--log.level=warn",
            ]
            procs.spawn(argv, log_file=self.log_file, pid_file=self.pid_file)
        try:
            procs.wait_until(self.healthy, timeout=timeout, what="Prometheus")
        except TimeoutError as exc:
            raise StackError(f"{exc}; see {self.log_file}\n{procs.tail(self.log_file)}") from exc

    def _last_reload(self) -> float:
        """``prometheus_config_last_reload_success_timestamp_seconds`` (0 if unknown)."""
        try:
            with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except (urllib.error.URLError, OSError):
            return 0.0
        for line in text.splitlines():
            if line.startswith("prometheus_config_last_reload_success_timestamp_seconds "):
                return float(line.split()[1])
        return 0.0

    def reload(self, *, timeout: float = 30.0) -> None:
        """Reload the configuration and rule files (SIGHUP); wait until it succeeded."""
        pid = procs.read_pid(self.pid_file)
        if pid is None:
            raise StackError("Prometheus does not run")
        before = self._last_reload()
        while int(time.time()) <= before:  # the timestamp has whole seconds
            time.sleep(0.1)
        os.kill(pid, signal.SIGHUP)
        try:
            procs.wait_until(
                lambda: self._last_reload() > before, timeout=timeout, what="a Prometheus reload"
            )
        except TimeoutError as exc:
            raise StackError(f"{exc}\n{procs.tail(self.log_file)}") from exc

    def stop(self) -> None:
        """Stop Prometheus if it runs."""
        pid = procs.read_pid(self.pid_file)
        if pid is not None:
            procs.stop_pid(pid, timeout=30.0)

    def running(self) -> bool:
        """True when the process is alive."""
        return procs.read_pid(self.pid_file) is not None

    def healthy(self) -> bool:
        """True when ``/-/ready`` answers 200."""
        if procs.read_pid(self.pid_file) is None:
            return False
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False
