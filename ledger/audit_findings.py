"""What the audit reports: :class:`Finding` (one discrepancy or notice, with a severity) and
:class:`Findings` (in order, capped per kind). Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ERROR, WARNING, INFO = "error", "warning", "info"
MAX_PER_KIND = 200  # individual findings kept per kind; the rest are counted


def show(value: Any, limit: int = 80) -> Any:
    """A JSON-friendly rendering of a value (bytes as hex, lists and dicts recursively)."""
    if isinstance(value, bytes | bytearray | memoryview):
        text = bytes(value).hex()
        return text if len(text) <= limit else f"{text[:limit]}... ({len(value)} bytes)"
    if isinstance(value, list | tuple):
        return [show(v, limit) for v in value]
    if isinstance(value, dict):
        return {k: show(v, limit) for k, v in value.items()}
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One discrepancy (or notice): which check, what, where, and the evidence."""

    check: str
    kind: str
    severity: str
    message: str
    height: int | None = None
    topic: str | None = None
    offset: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        out: dict[str, Any] = {
            "check": self.check,
            "kind": self.kind,
            "severity": self.severity,
            "message": self.message,
        }
        for name in ("height", "topic", "offset"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.details:
            out["details"] = {k: show(v) for k, v in self.details.items()}
        return out


class Findings:
    """Findings in order, at most :data:`MAX_PER_KIND` kept per kind (the rest counted)."""

    def __init__(self) -> None:
        self.items: list[Finding] = []
        self.by_kind: Counter[str] = Counter()

    def add(self, finding: Finding) -> None:
        self.by_kind[finding.kind] += 1
        if self.by_kind[finding.kind] <= MAX_PER_KIND:
            self.items.append(finding)

    def report(self, check: str, kind: str, severity: str, message: str, **where: Any) -> None:
        """Add a :class:`Finding` (``where``: its height, topic, offset, details)."""
        self.add(Finding(check=check, kind=kind, severity=severity, message=message, **where))

    def count(self, severity: str) -> int:
        """How many findings of ``severity`` (counted ones included)."""
        kinds = {f.kind: f.severity for f in self.items}
        return sum(n for kind, n in self.by_kind.items() if kinds.get(kind) == severity)

    def dropped(self) -> dict[str, int]:
        """Kinds with findings beyond the cap, and how many were not kept."""
        return {k: n - MAX_PER_KIND for k, n in self.by_kind.items() if n > MAX_PER_KIND}
