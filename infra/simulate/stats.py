"""Counts and the display of ``pantheon simulate``."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Stats:
    """Counters of one run; ``rates`` over the last few seconds."""

    started: float = field(default_factory=time.monotonic)
    sent: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    timeouts: int = 0
    resyncs: int = 0
    delivery_failures: int = 0
    in_flight: int = 0
    _history: deque[tuple[float, int, int]] = field(default_factory=deque)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def sample(self, now: float) -> tuple[float, float]:
        """(sent/s, accepted/s) over the last ~5 s."""
        if not self._history:
            self._history.append((self.started, 0, 0))
        self._history.append((now, self.sent, self.accepted))
        while len(self._history) > 2 and now - self._history[0][0] > 5.0:
            self._history.popleft()
        t0, s0, a0 = self._history[0]
        span = now - t0
        if span <= 0:
            return 0.0, 0.0
        return (self.sent - s0) / span, (self.accepted - a0) / span

    def line(self, now: float) -> str:
        """The one-line progress display."""
        sent_rate, ok_rate = self.sample(now)
        return (
            f"simulate {now - self.started:6.1f}s  sent {self.sent} ({sent_rate:.1f}/s)  "
            f"accepted {self.accepted} ({ok_rate:.1f}/s)  rejected {self.rejected_total}  "
            f"in flight {self.in_flight}  resyncs {self.resyncs}"
        )

    def summary(self, now: float) -> dict[str, Any]:
        """The final summary (also the ``--json`` output)."""
        elapsed = max(now - self.started, 1e-9)
        return {
            "seconds": round(elapsed, 3),
            "sent": self.sent,
            "accepted": self.accepted,
            "rejected": self.rejected_total,
            "rejected_by_code": dict(sorted(self.rejected.items())),
            "no_receipt": self.timeouts,
            "delivery_failures": self.delivery_failures,
            "resyncs": self.resyncs,
            "sent_per_second": round(self.sent / elapsed, 2),
            "accepted_per_second": round(self.accepted / elapsed, 2),
            "by_kind": dict(sorted(self.by_kind.items())),
        }


def format_summary(summary: Mapping[str, Any]) -> str:
    """The text summary printed on stderr."""
    rejected = ", ".join(f"{k} {v}" for k, v in summary["rejected_by_code"].items()) or "none"
    kinds = ", ".join(f"{k} {v}" for k, v in summary["by_kind"].items()) or "none"
    return (
        f"simulate: {summary['sent']} sent, {summary['accepted']} accepted, "
        f"{summary['rejected']} rejected ({rejected}), {summary['no_receipt']} without receipt "
        f"in {summary['seconds']:.1f}s ({summary['sent_per_second']}/s sent, "
        f"{summary['accepted_per_second']}/s accepted); {summary['resyncs']} nonce resyncs; "
        f"by kind: {kinds}"
    )
