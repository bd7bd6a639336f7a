"""Monitoring: the committed rule and dashboard files are the generated ones and promtool
accepts them; against a real Prometheus scraping a running consortium (4 validator processes,
a projector, a periodic auditor) under load, every query of every dashboard panel and every
alert rule's signal returns data, IamEventsRefused fires on a forged IAM event, and
FinalityStalled fires when quorum is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from harness.consortium import REPO, Consortium, Load
from infra.grafana import dashboards
from infra.postgres_server import Postgres
from infra.procs import free_port
from infra.prometheus_config import NOT_YET_EXPORTED, RULES_FILE, alert_rules, rules_yaml
from infra.prometheus_server import Prometheus
from runtime.kafka_config import admin_config, producer_config
from runtime.topics import ensure_topics

pytestmark = pytest.mark.integration


def test_committed_files_are_generated() -> None:
    assert RULES_FILE.read_text() == rules_yaml(), "run: python -m infra.prometheus_config"
    for dashboard in dashboards.DASHBOARDS:
        assert dashboards.path_of(dashboard).read_text() == dashboards.render(dashboard)
    for dashboard in dashboards.DASHBOARDS:
        for panel in dashboard.panels:
            assert panel.requires is None or panel.requires in NOT_YET_EXPORTED


def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    short = tmp_path / "short.rules.yml"
    short.write_text(rules_yaml(alert_rules(stall_window="20s", stall_for="5s")))
    done = subprocess.run(
        ["promtool", "check", "rules", str(RULES_FILE), str(short)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


class MetricsConsortium(Consortium):
    """The harness's validators, each serving /metrics on its own port."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ports = {inst: free_port() for inst in self.institutions}

    def argv(self, inst: str, operator: int = 0) -> list[str]:
        return [*super().argv(inst, operator), "--metrics-port", str(self.ports[inst])]


def query(prom: Prometheus, expr: str) -> list[dict[str, Any]]:
    url = f"{prom.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        doc = json.load(resp)
    assert doc["status"] == "success", doc
    result = doc["data"]["result"]
    return result if isinstance(result, list) else [result]


def firing(prom: Prometheus) -> set[str]:
    with urllib.request.urlopen(f"{prom.url}/api/v1/alerts", timeout=10) as resp:
        doc = json.load(resp)
    return {a["labels"]["alertname"] for a in doc["data"]["alerts"] if a["state"] == "firing"}


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )


@pytest.fixture
def running(
    bootstrap: str, postgres: Postgres, prometheus: Prometheus, tmp_path: Path
) -> Iterator[tuple[MetricsConsortium, Load]]:
    with ExitStack() as stack:
        cons = MetricsConsortium(bootstrap, tmp_path / "c", 4, block_interval_ms=300)
        stack.callback(cons.close)
        ensure_topics(
            AdminClient(admin_config(bootstrap)), prefix=cons.prefix, institutions=cons.institutions
        )
        cons.start_all()
        for inst, port in cons.ports.items():
            target = f"mon-{cons.prefix}{inst}"
            prometheus.register_target(target, port, {"service": "validator"})
            stack.callback((prometheus.targets_dir / f"{target}.json").unlink, missing_ok=True)
        settings = postgres.settings
        server = f"host={settings.host} port={settings.pg_port} user=pantheon"
        dbname = f"mon_{uuid.uuid4().hex[:8]}"
        common = [
            "--genesis",
            str(cons.genesis_path),
            "--bootstrap",
            bootstrap,
            "--prefix",
            cons.prefix,
        ]
        env = {"PGPASSWORD": postgres.password()}
        procs = {
            "projector": [
                sys.executable,
                "-m",
                "projections.projector",
                "--institution",
                "inst-1",
                *common,
                "--dsn",
                server,
                "--dbname",
                dbname,
            ],
            "audit": [
                sys.executable,
                "-m",
                "readers.audit",
                *common,
                "--every",
                "3",
                "--quiet",
                "--no-progress",
                "--institution",
                "inst-1",
                "--dsn",
                server,
                "--dbname",
                dbname,
            ],
        }
        for name, argv in procs.items():
            port = free_port()
            proc = spawn([*argv, "--metrics-port", str(port)], tmp_path / f"{name}.log", env)
            stack.callback(proc.wait, 20)
            stack.callback(proc.kill)
            target = f"mon-{cons.prefix}{name}"
            prometheus.register_target(target, port, {"service": name})
            stack.callback((prometheus.targets_dir / f"{target}.json").unlink, missing_ok=True)
        load = Load(cons, cons.gov_key("inst-1"), rate=20).start()
        stack.callback(load.stop)
        yield cons, load


def test_every_panel_and_alert_signal_returns_data(
    running: tuple[MetricsConsortium, Load], prometheus: Prometheus, tmp_path: Path
) -> None:
    cons, _ = running
    rules = alert_rules(stall_window="20s", stall_for="5s")
    (prometheus.rules_dir / RULES_FILE.name).write_text(rules_yaml(rules))
    prometheus.reload()  # SIGHUP: the lifecycle API is off
    exprs: dict[str, str] = {}
    for dashboard in dashboards.DASHBOARDS:
        for panel in dashboard.panels:
            if panel.requires is None:
                for expr, _ in panel.queries:
                    exprs[expr] = f"{dashboard.uid}: {panel.title}"
    for rule in rules:
        if rule.requires is None:
            for signal in rule.signals:
                exprs[signal] = f"alert {rule.name}"
    assert len(exprs) > 25
    deadline = time.monotonic() + 90
    empty = dict(exprs)
    while empty and time.monotonic() < deadline:
        cons.check_alive()
        empty = {e: where for e, where in empty.items() if not query(prometheus, e)}
        time.sleep(2)
    logs = {p.name: p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("*.log")}
    assert not empty, f"no data for {json.dumps(empty, indent=1)}\n{logs}"
    # the periodic auditor audits the live chain and its projection clean (its first runs may
    # fail while the projector creates its database: outcome "failed", not "discrepancies");
    # every signal can have data before its first clean run, so wait for that run
    clean = 'sum(pantheon_audit_runs_total{outcome="clean"})'
    bad = 'sum(pantheon_audit_runs_total{outcome="discrepancies"})'
    while time.monotonic() < deadline + 60 and not (
        query(prometheus, "max(pantheon_audit_height)")[0]["value"][1] != "0"
        and float(query(prometheus, clean)[0]["value"][1]) > 0
    ):
        time.sleep(1)
    logs = {p.name: p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("*.log")}
    assert query(prometheus, "max(pantheon_audit_height)")[0]["value"][1] != "0", logs
    assert float(query(prometheus, clean)[0]["value"][1]) > 0, logs
    assert float(query(prometheus, bad)[0]["value"][1]) == 0, logs
    assert query(prometheus, "sum(pantheon_audit_discrepancies)")[0]["value"][1] == "0", logs
    assert "FinalityStalled" not in firing(prometheus)
    assert "IamEventsRefused" not in firing(prometheus)

    # a forged event on inst-1's IAM topic (unsigned: D21) is refused, counted, and alerted
    forged = Producer(producer_config(cons.bootstrap))
    forged.produce(f"{cons.prefix}iam.inst-1", key=b"mallory", value=b"\xc3\x01forged")
    assert forged.flush(10) == 0
    deadline = time.monotonic() + 60
    while "IamEventsRefused" not in firing(prometheus):
        assert time.monotonic() < deadline, query(prometheus, "pantheon_iam_rejected_total")
        time.sleep(2)

    cons.kill("inst-3")
    cons.kill("inst-4")  # 2 of 4 institutions remain: quorum (3) is lost
    deadline = time.monotonic() + 75
    while "FinalityStalled" not in firing(prometheus):
        assert time.monotonic() < deadline, query(prometheus, "ALERTS")
        time.sleep(2)
