"""The counts and display of ``pantheon simulate`` (:mod:`infra.simulate.stats`)."""

from __future__ import annotations

import json

from infra.simulate.stats import Stats, format_summary


def test_stats_summary_and_line() -> None:
    stats = Stats(started=100.0)
    stats.sent, stats.accepted = 10, 8
    stats.rejected["BAD_NONCE"] = 2
    stats.by_kind["anchor"] = 10
    summary = stats.summary(105.0)
    assert summary["sent_per_second"] == 2.0 and summary["rejected"] == 2
    assert "BAD_NONCE 2" in format_summary(summary)
    assert "sent 10" in stats.line(105.0)
    json.dumps(summary)
