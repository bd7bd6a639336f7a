"""Labelled series of the validator and the gateway exist at 0 before their first event (D49)."""

from __future__ import annotations

import re

from prometheus_client import REGISTRY, generate_latest

from gateway.metrics import GatewayMetrics
from ledger.results import ResultCode
from streams import validator_metrics


def test_validator_exports_every_result_code_and_event_counter_at_zero() -> None:
    validator_metrics.export_zeroes({"institution": "inst-z", "operator": "0"})
    text = generate_latest(REGISTRY).decode()
    labels = 'institution="inst-z",operator="0"'
    series = rf'^pantheon_validator_transactions_total\{{{labels},result="(\w+)"\}} 0\.0$'
    results = set(re.findall(series, text, re.M))
    assert results == {code.name for code in ResultCode}
    for name in ("divergences", "equivocations", "votes", "markers"):
        assert f"pantheon_validator_{name}_total{{{labels}}} 0.0" in text


def test_gateway_exports_request_outcomes_at_zero() -> None:
    text = GatewayMetrics("inst-z").render().decode()
    for kind in ("query", "mutation"):
        for outcome in ("ok", "error"):
            series = (
                f'pantheon_gateway_requests_total{{institution="inst-z",operation="{kind}",'
                f'outcome="{outcome}"}} 0.0'
            )
            assert series in text
        count = f'pantheon_gateway_request_seconds_count{{institution="inst-z",operation="{kind}"}}'
        assert count + " 0.0" in text
