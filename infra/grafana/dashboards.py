"""Grafana dashboards of Pantheon, as data; the JSON provisioning files are generated from it.

Theory of operation
-------------------
* :data:`DASHBOARDS` lists four dashboards (consortium overview, validator, Layer 2, gateway);
  each :class:`Panel` has a title, one or more PromQL queries, a unit and, when it watches a
  process kind that does not run yet, ``requires`` (a key of
  :data:`infra.prometheus_config.NOT_YET_EXPORTED`).
* :func:`write_all` writes ``infra/grafana/dashboards/<uid>.json`` (Grafana's dashboard model,
  datasource ``pantheon-prometheus``); a test keeps the files in sync and evaluates every
  query of every panel against a real Prometheus scraping a running consortium.
* Provisioning: ``infra/grafana/provisioning/datasources/pantheon.yml`` (the Prometheus URL
  from ``PANTHEON_PROMETHEUS_URL``) and ``provisioning/dashboards/pantheon.yml`` (a file
  provider reading ``PANTHEON_GRAFANA_DASHBOARDS``, i.e. this ``dashboards/`` folder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GRAFANA_DIR = Path(__file__).resolve().parent
DASHBOARDS_DIR = GRAFANA_DIR / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "pantheon-prometheus"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Panel:
    """One panel: title, queries (expr, legend), unit, kind."""

    title: str
    queries: tuple[tuple[str, str], ...]
    unit: str = "short"
    kind: str = "timeseries"
    requires: str | None = None
    description: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Dashboard:
    uid: str
    title: str
    panels: tuple[Panel, ...]


def _p(title: str, expr: str, legend: str = "", **kw: Any) -> Panel:
    return Panel(title=title, queries=((expr, legend),), **kw)


def _q95(metric: str, by: str = "") -> str:
    extra = f", {by}" if by else ""
    return f"histogram_quantile(0.95, sum by (le{extra}) (rate({metric}_bucket[1m])))"


_VAL = "{{institution}}/{{operator}}"
_LATENCY = "pantheon_validator_finality_latency_seconds"
_GW_LATENCY = "pantheon_gateway_request_seconds"

# The dashboards below are tables of panels, one panel a line or two, kept as laid out by hand
# (`# fmt: skip` at the end of each): the formatter would spread each over six lines.

OVERVIEW = Dashboard(uid="pantheon-overview", title="Pantheon: consortium overview", panels=(
    _p("Final height", "max(pantheon_validator_final_height)", "final", kind="stat"),
    _p("Validators up", 'sum(up{service="validator"})', "up", kind="stat"),
    _p("Transactions per second by result",
       "sum by (result) (rate(pantheon_validator_transactions_total[1m]))", "{{result}}",
       unit="ops"),
    Panel(title="Finality latency", unit="s", queries=(
        (_q95(_LATENCY), "p95"),
        (f"histogram_quantile(0.5, sum by (le) (rate({_LATENCY}_bucket[1m])))", "p50"))),
    _p("Blocks cut but not final", "max(pantheon_validator_cut_height - "
       "pantheon_validator_final_height)", "pending"),
    _p("Projection lag (blocks)",
       "max by (institution) (pantheon_projection_seen_height - pantheon_projection_height)",
       "{{institution}}"),
    _p("Audit discrepancies", "sum(pantheon_audit_discrepancies)", "errors", kind="stat"),
    _p("Audited height", "max(pantheon_audit_height)", "audited", kind="stat"),
    _p("Divergences", "sum(pantheon_validator_divergences_total)", "divergences",
       kind="stat"),
    _p("Equivocations reported", "sum(pantheon_validator_equivocations_total)",
       "equivocations", kind="stat"),
    _p("Gateway requests per second", f"sum by (institution) (rate({_GW_LATENCY}_count[1m]))",
       "{{institution}}", unit="reqps", requires="gateway"),
    _p("Layer-2 readings per second", "sum(rate(pantheon_l2_records_total[1m]))", "accepted",
       unit="ops", requires="batcher"),
))  # fmt: skip

VALIDATOR = Dashboard(uid="pantheon-validator", title="Pantheon: validators", panels=(
    Panel(title="Heights", queries=(
        ("pantheon_validator_cut_height", f"cut {_VAL}"),
        ("pantheon_validator_voted_height", f"voted {_VAL}"),
        ("pantheon_validator_final_height", f"final {_VAL}"))),
    _p("Lag behind the highest final height (blocks)",
       "scalar(max(pantheon_validator_final_height)) - pantheon_validator_final_height", _VAL),
    _p("Finality latency p95 by validator", _q95(_LATENCY, "institution, operator"), _VAL,
       unit="s"),
    _p("Votes signed per second", "rate(pantheon_validator_votes_total[1m])", _VAL, unit="ops"),
    _p("TimeToCut markers per second", "rate(pantheon_validator_markers_total[1m])", _VAL,
       unit="ops"),
    _p("Final entries per second by result",
       "sum by (institution, result) (rate(pantheon_validator_transactions_total[1m]))",
       "{{institution}} {{result}}", unit="ops"),
    _p("Scrape targets up", 'up{service="validator"}', "{{instance}}"),
    _p("Resident memory", 'process_resident_memory_bytes{service="validator"}', "{{instance}}",
       unit="bytes"),
    _p("CPU", 'rate(process_cpu_seconds_total{service="validator"}[1m])', "{{instance}}",
       unit="percentunit"),
    _p("Projected height by institution", "pantheon_projection_height", "{{institution}}"),
    _p("Projector messages skipped or checked",
       "sum by (institution, reason) (pantheon_projection_skipped)",
       "{{institution}} {{reason}}"),
    _p("Divergences", "pantheon_validator_divergences_total", _VAL),
    _p("Equivocations", "pantheon_validator_equivocations_total", _VAL),
    _p("Audit findings by severity", "pantheon_audit_findings", "{{severity}}"),
    _p("Audit replay rate", "pantheon_audit_transactions_per_second", "tx/s", unit="ops"),
))  # fmt: skip

LAYER2 = Dashboard(uid="pantheon-layer2", title="Pantheon: Layer 2", panels=(
    Panel(title="Readings accepted and messages rejected per second", unit="ops",
          requires="batcher", queries=(
        ("sum by (institution) (rate(pantheon_l2_records_total[1m]))", "accepted {{institution}}"),
        ("sum by (institution, reason) (rate(pantheon_l2_rejected_total[1m]))",
         "rejected {{institution}} {{reason}}"))),
    _p("Leaves of the last batch", "pantheon_l2_last_batch_leaves", "{{institution}}",
       requires="batcher"),
    Panel(title="Batches sealed and committed per minute", requires="batcher", queries=(
        ("sum by (institution) (rate(pantheon_l2_batches_total[5m])) * 60",
         "sealed {{institution}}"),
        ("sum by (institution) (rate(pantheon_l2_batches_committed_total[5m])) * 60",
         "committed {{institution}}"))),
    _p("Batches sealed but not committed",
       "sum by (institution) (pantheon_l2_batches_total - pantheon_l2_batches_committed_total)",
       "{{institution}}", requires="batcher"),
    _p("Layer-2 audit discrepancies", 'pantheon_audit_discrepancies{check="l2"}', "l2"),
))  # fmt: skip

GATEWAY = Dashboard(uid="pantheon-gateway", title="Pantheon: gateways", panels=(
    _p("Request latency p95 by operation", _q95(_GW_LATENCY, "operation"), "{{operation}}",
       unit="s", requires="gateway"),
    _p("Requests by outcome",
       "sum by (institution, outcome) (rate(pantheon_gateway_requests_total[1m]))",
       "{{institution}} {{outcome}}", unit="reqps", requires="gateway"),
    _p("Auth failures by reason",
       "sum by (institution, reason) (rate(pantheon_gateway_auth_failures_total[5m]))",
       "{{institution}} {{reason}}", unit="ops", requires="gateway"),
    _p("Queries refused by a limit",
       "sum by (institution, code) (rate(pantheon_gateway_limited_total[5m]))",
       "{{institution}} {{code}}", unit="ops", requires="gateway"),
    _p("Live subscriptions", "pantheon_gateway_subscriptions", "{{institution}}",
       requires="gateway"),
    _p("Height seen by the gateway", "pantheon_gateway_height", "{{institution}}",
       requires="gateway"),
))  # fmt: skip

DASHBOARDS = (OVERVIEW, VALIDATOR, LAYER2, GATEWAY)


def dashboard_json(dashboard: Dashboard) -> dict[str, Any]:
    """Grafana's dashboard model."""
    panels = []
    for i, panel in enumerate(dashboard.panels):
        width = 6 if panel.kind == "stat" else 12
        description = panel.description
        if panel.requires is not None:
            description = (description + " " if description else "") + (
                f"Needs a {panel.requires} metric not exported yet."
            )
        panels.append(
            {
                "id": i + 1,
                "type": panel.kind,
                "title": panel.title,
                "description": description,
                "datasource": DATASOURCE,
                "gridPos": {"h": 8, "w": width, "x": (i * 12) % 24, "y": 8 * (i // 2)},
                "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                "options": {},
                "targets": [
                    {
                        "refId": chr(ord("A") + j),
                        "datasource": DATASOURCE,
                        "expr": expr,
                        "legendFormat": legend,
                    }
                    for j, (expr, legend) in enumerate(panel.queries)
                ],
            }
        )
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "tags": ["pantheon"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": panels,
    }


def render(dashboard: Dashboard) -> str:
    """The JSON text of a dashboard file."""
    return json.dumps(dashboard_json(dashboard), indent=2) + "\n"


def path_of(dashboard: Dashboard) -> Path:
    return DASHBOARDS_DIR / f"{dashboard.uid}.json"


def write_all() -> list[Path]:
    """(Re)write every dashboard file."""
    DASHBOARDS_DIR.mkdir(parents=True, exist_ok=True)
    out = []
    for dashboard in DASHBOARDS:
        path = path_of(dashboard)
        path.write_text(render(dashboard))
        out.append(path)
    return out
