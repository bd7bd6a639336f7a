"""Prometheus configuration of Pantheon: alert rules, and where Prometheus finds them.

Theory of operation
-------------------
* Scrape targets are discovered from files (``infra/prometheus_server.py``: every process the
  stack starts writes ``<state>/prometheus/targets/<name>.json`` with a ``service`` label:
  ``validator``, ``projector``, ``gateway``, ``batcher``, ``auditor``).
* Alert rules are defined here, as data: each :class:`AlertRule` has one or more *signals*
  (PromQL that returns series whenever the watched processes run, healthy or not) and a
  condition built on them. ``infra/alerts/pantheon.rules.yml`` is generated from
  :func:`alert_rules` (``python -m infra.prometheus_config``; a test keeps it in sync and runs
  ``promtool check rules`` on it) and installed into ``<state>/prometheus/rules/`` by
  :func:`install_rules`, which the Prometheus config loads with ``rule_files``.
* Windows and ``for:`` durations are parameters so a test can make a copy that fires in
  seconds (:func:`rules_yaml` with short durations).
* ``requires`` names the process kind a rule needs; kinds that do not exist yet are listed
  in :data:`NOT_YET_EXPORTED` (the tests skip them, with that reason).
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

ALERTS_DIR = Path(__file__).resolve().parent / "alerts"
RULES_FILE = ALERTS_DIR / "pantheon.rules.yml"

NOT_YET_EXPORTED: dict[str, str] = {
    "gateway": "the monitoring test's consortium runs no gateway (the local stack does, D36)",
    "batcher": "the monitoring test's consortium runs no batcher (the local stack does, D36)",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRule:
    """One alerting rule: ``expr`` fires; ``signals`` are its data (always present)."""

    name: str
    expr: str
    signals: tuple[str, ...]
    duration: str
    severity: str
    summary: str
    description: str
    requires: str | None = None


def alert_rules(
    *,
    stall_window: str = "2m",
    stall_for: str = "1m",
    lag_window: str = "5m",
    lag_for: str = "5m",
    spike_for: str = "2m",
) -> list[AlertRule]:
    """The alert rules (short windows for tests)."""
    pending = "max(pantheon_validator_cut_height - pantheon_validator_final_height)"
    progress = f"max(changes(pantheon_validator_final_height[{stall_window}]))"
    validator_lag = "scalar(max(pantheon_validator_final_height)) - pantheon_validator_final_height"
    projector_lag = "pantheon_projection_seen_height - pantheon_projection_height"
    auth = "sum by (institution) (rate(pantheon_gateway_auth_failures_total[5m]))"
    iam_refused = "pantheon_iam_rejected_total"
    return [
        AlertRule(
            name="FinalityStalled",
            expr=f"({pending} > 0) and on() ({progress} == 0)",
            signals=(pending, progress),
            duration=stall_for,
            severity="critical",
            summary="{{ $value }} block(s) cut and voted on, none became final",
            description=f"Blocks are cut and voted on, but no validator saw finality for "
            f"{stall_window}: fewer than a quorum of institutions are voting (validators down, "
            "partitioned or diverged).",
        ),
        AlertRule(
            name="ValidatorDiverged",
            expr="increase(pantheon_validator_divergences_total[10m]) > 0",
            signals=("pantheon_validator_divergences_total",),
            duration="0s",
            severity="critical",
            summary="Validator {{ $labels.institution }}/{{ $labels.operator }} diverged",
            description="Its block hash differs from the final one: it stopped voting and "
            "exited (code 3). Compare with `pantheon audit`.",
        ),
        AlertRule(
            name="ValidatorEquivocated",
            expr="increase(pantheon_validator_equivocations_total[10m]) > 0",
            signals=("pantheon_validator_equivocations_total",),
            duration="0s",
            severity="warning",
            summary="Equivocation evidence reported by {{ $labels.institution }}",
            description="An operator signed two hashes at one height; evidence is on chain.",
        ),
        AlertRule(
            name="ValidatorDown",
            expr='up{service="validator"} == 0',
            signals=('up{service="validator"}',),
            duration="1m",
            severity="critical",
            summary="Validator target {{ $labels.instance }} is down",
            description="Prometheus cannot scrape this validator.",
        ),
        AlertRule(
            name="ValidatorLagGrowing",
            expr=f"({validator_lag}) > 20 and delta(({validator_lag})[{lag_window}:]) > 0",
            signals=(validator_lag,),
            duration=lag_for,
            severity="warning",
            summary="Validator {{ $labels.institution }} is {{ $value }} blocks behind",
            description="Its final height falls further behind the highest final height.",
        ),
        AlertRule(
            name="ProjectionLagGrowing",
            expr=f"({projector_lag}) > 20 and delta(({projector_lag})[{lag_window}:]) > 0",
            signals=(projector_lag,),
            duration=lag_for,
            severity="warning",
            summary="Projection of {{ $labels.institution }} lags {{ $value }} blocks",
            description="The projector falls further behind the final blocks it has seen.",
        ),
        AlertRule(
            name="AuthFailuresSpiking",
            expr=f"{auth} > 1",
            signals=(auth,),
            duration=spike_for,
            severity="warning",
            summary="{{ $value }} auth failures per second at {{ $labels.institution }}",
            description="Authentication failures above 1/s: credential stuffing or a broken "
            "client.",
            requires="gateway",
        ),
        AlertRule(
            name="IamEventsRefused",
            expr=f"sum by (institution, reason) (increase({iam_refused}[10m])) > 0",
            signals=(iam_refused,),
            duration="0s",
            severity="warning",
            summary="IAM events of {{ $labels.institution }} refused ({{ $labels.reason }})",
            description="Messages on the institution's IAM topic were refused by its IAM "
            "projection (unsigned, forged, replayed, signed by a revoked key, a key height from "
            "the future or a key revoked before the append time: D21, D56); none was "
            "applied. Someone who can write to the topic is trying; `pantheon audit "
            "--institution` lists them (iam.refused).",
        ),
        AlertRule(
            name="IamProjectionWaiting",
            expr="max by (institution) (pantheon_iam_waiting_height) > 0",
            signals=("max by (institution) (pantheon_iam_waiting_height)",),
            duration=lag_for,
            severity="critical",
            summary="User management of {{ $labels.institution }} waits for chain height "
            "{{ $value }}",
            description="The IAM projection holds an event it cannot decide yet: its key "
            "height is not projected, or no projected block is stamped after the event's "
            "append time plus or minus the skew S (D56; pantheon_iam_waiting_after_ms says "
            "which time). The chain projection lags, or the chain cuts no blocks (it is idle: "
            "the institution's own IAM changes make it cut one, D62, so on an idle chain the "
            "wait is for a message its gateway did not write, or a tick that failed), or the "
            "broker's clock runs more than S ahead of the quorum's. A named height that "
            "will never come is refused as future once a block is stamped after append + S. "
            "User changes stall until it passes.",
        ),
        AlertRule(
            name="AuditDiscrepancy",
            expr="max by (check) (pantheon_audit_discrepancies) > 0",
            signals=("max by (check) (pantheon_audit_discrepancies)",),
            duration="0s",
            severity="critical",
            summary="pantheon audit found {{ $value }} discrepancies ({{ $labels.check }})",
            description="The logs or a projection contradict the replay; run `pantheon audit` "
            "for the report.",
        ),
    ]


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON string syntax is valid YAML)."""
    return json.dumps(text)


def rules_yaml(rules: list[AlertRule] | None = None, group: str = "pantheon") -> str:
    """A Prometheus rule file with one group."""
    lines = [
        "# Generated by `python -m infra.prometheus_config` from infra/prometheus_config.py.",
        "groups:",
        f"  - name: {group}",
        "    rules:",
    ]
    for rule in rules if rules is not None else alert_rules():
        lines += [
            f"      - alert: {rule.name}",
            f"        expr: {_q(rule.expr)}",
            f"        for: {rule.duration}",
            "        labels:",
            f"          severity: {rule.severity}",
            "        annotations:",
            f"          summary: {_q(rule.summary)}",
            f"          description: {_q(rule.description)}",
        ]
    return "\n".join(lines) + "\n"


def install_rules(directory: Path) -> list[Path]:
    """Copy the rule files of ``infra/alerts/`` into ``directory`` (Prometheus's rule dir)."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for source in sorted(ALERTS_DIR.glob("*.yml")):
        target = directory / source.name
        tmp = directory / f".{source.name}.tmp"
        shutil.copyfile(source, tmp)
        tmp.replace(target)
        out.append(target)
    return out


def main(argv: list[str] | None = None) -> int:
    """Regenerate the committed rule file (and the Grafana dashboards)."""
    del argv
    RULES_FILE.parent.mkdir(parents=True, exist_ok=True)
    RULES_FILE.write_text(rules_yaml())
    from infra.grafana import dashboards  # noqa: PLC0415 (generation only)

    written = dashboards.write_all()
    print("\n".join(str(p) for p in [RULES_FILE, *written]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
