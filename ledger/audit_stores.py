"""What a store holds against the replayed state: Layer-2 leaves against committed roots,
stored objects against anchors, and table rows against expected rows (counts, an
order-independent digest, then the exact differing rows and columns). Pure."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.audit_findings import ERROR, INFO, Finding, show
from ledger.hashing import sha256
from ledger.merkle import root
from ledger.state import WorldState


def check_l2_batch(batch: Mapping[str, Any], leaves: Sequence[bytes] | None) -> list[Finding]:
    """A ``BatchState`` record against the leaves a store holds for it (in leaf order)."""
    batch_id = batch["batch_id"]
    where: dict[str, Any] = {"height": batch["height"]}
    if leaves is None:
        return [
            Finding(
                check="l2",
                kind="l2.leaves_missing",
                severity=ERROR,
                message=f"batch {batch_id!r}: no stored leaves",
                **where,
            )
        ]
    out = []
    if len(leaves) != batch["leaf_count"]:
        out.append(
            Finding(
                check="l2",
                kind="l2.leaf_count",
                severity=ERROR,
                message=f"batch {batch_id!r}: {len(leaves)} stored leaves, the chain "
                f"committed {batch['leaf_count']}",
                **where,
            )
        )
    computed = root(list(leaves))
    if computed != batch["merkle_root"]:
        out.append(
            Finding(
                check="l2",
                kind="l2.root_mismatch",
                severity=ERROR,
                message=f"batch {batch_id!r}: the stored leaves hash to another "
                "root than the committed one",
                **where,
                details={"committed": batch["merkle_root"], "computed": computed},
            )
        )
    return out


def _from_data_proxy(metadata: str) -> bool:
    """Whether an anchor's public metadata is the data proxy's ``{content_type, size}``."""
    try:
        doc = json.loads(metadata)
    except ValueError:
        return False
    return isinstance(doc, dict) and set(doc) == {"content_type", "size"}


def check_anchor(anchor: Mapping[str, Any], content: bytes | None) -> list[Finding]:
    """An ``AnchorState`` record against the stored object (None: not stored)."""
    data_id = anchor["data_id"]
    if content is None:
        if not _from_data_proxy(anchor.get("metadata", "")):
            # anchored directly (SDK, simulator): there never was an object in this store
            return [
                Finding(
                    check="anchors",
                    kind="anchor.no_object",
                    severity=INFO,
                    message=f"anchor {data_id!r} was not made through the data "
                    "proxy: no stored object to compare",
                    height=anchor["height"],
                )
            ]
        return [
            Finding(
                check="anchors",
                kind="anchor.object_missing",
                severity=ERROR,
                message=f"anchor {data_id!r}: no stored object",
                height=anchor["height"],
            )
        ]
    digest = sha256(content)
    if digest != anchor["sha256"]:
        return [
            Finding(
                check="anchors",
                kind="anchor.object_mismatch",
                severity=ERROR,
                message=f"anchor {data_id!r}: the stored object does not hash to the "
                "anchored SHA-256",
                height=anchor["height"],
                details={"anchored": anchor["sha256"], "stored": digest, "bytes": len(content)},
            )
        ]
    return []


# -- tables -------------------------------------------------------------------------------
Row = tuple[Any, ...]


def normalize(value: Any) -> Any:
    """Database and record values in one form (bytes, tuples)."""
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if isinstance(value, list | tuple):
        return tuple(normalize(v) for v in value)
    return value


def row_digest(rows: Iterable[Row]) -> bytes:
    """Order-independent digest of a table's rows."""
    encoded = sorted(repr(tuple(normalize(v) for v in row)).encode() for row in rows)
    return sha256(b"\n".join(encoded))


@dataclass(frozen=True, slots=True, kw_only=True)
class TableDiff:
    """How a table compares: counts, digests, and the findings for differing rows."""

    table: str
    expected_rows: int
    actual_rows: int
    expected_digest: bytes
    actual_digest: bytes
    findings: tuple[Finding, ...]

    @property
    def equal(self) -> bool:
        return self.expected_digest == self.actual_digest

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "expected_rows": self.expected_rows,
            "actual_rows": self.actual_rows,
            "expected_digest": self.expected_digest.hex(),
            "actual_digest": self.actual_digest.hex(),
            "equal": self.equal,
        }


def _value_diff(expected: Any, got: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"expected": show(expected), "got": show(got)}
    if isinstance(expected, bytes) and isinstance(got, bytes):
        first = next(
            (i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b),
            min(len(expected), len(got)),
        )
        out["first_differing_byte"] = first
        if len(expected) != len(got):
            out["lengths"] = [len(expected), len(got)]
    return out


def diff_table(
    table: str,
    columns: Sequence[str],
    key_columns: Sequence[str],
    expected: Iterable[Row],
    actual: Iterable[Row],
    *,
    check: str = "projection",
    kind: str = "row",
    name: str | None = None,
) -> TableDiff:
    """Compare rows (same column order) keyed by ``key_columns``: every missing, unexpected
    and changed row becomes a finding (``<kind>.missing``, ``.unexpected``, ``.differs`` of
    ``check``) naming the table as ``name`` (default ``chain.<table>``), its key and, for
    changes, the columns with expected and found values (bytes as hex). Every audit of a
    projection (chain, IAM, stored objects) reports rows this one way."""
    shown = name or f"chain.{table}"
    index = [columns.index(c) for c in key_columns]
    exp = {tuple(r[i] for i in index): r for r in map(normalize, expected)}
    act = {tuple(r[i] for i in index): r for r in map(normalize, actual)}
    findings: list[Finding] = []

    def key_of(key: Row) -> dict[str, Any]:
        return {c: show(v) for c, v in zip(key_columns, key, strict=True)}

    for key in sorted(exp.keys() - act.keys(), key=repr):
        findings.append(
            Finding(
                check=check,
                kind=f"{kind}.missing",
                severity=ERROR,
                message=f"{shown}: row {key_of(key)} is missing",
                details={
                    "table": table,
                    "key": key_of(key),
                    "expected": {c: show(v) for c, v in zip(columns, exp[key], strict=True)},
                },
            )
        )
    for key in sorted(act.keys() - exp.keys(), key=repr):
        findings.append(
            Finding(
                check=check,
                kind=f"{kind}.unexpected",
                severity=ERROR,
                message=f"{shown}: row {key_of(key)} should not exist",
                details={
                    "table": table,
                    "key": key_of(key),
                    "got": {c: show(v) for c, v in zip(columns, act[key], strict=True)},
                },
            )
        )
    for key in sorted(exp.keys() & act.keys(), key=repr):
        a, b = exp[key], act[key]
        if a == b:
            continue
        cols = {c: _value_diff(x, y) for c, x, y in zip(columns, a, b, strict=True) if x != y}
        findings.append(
            Finding(
                check=check,
                kind=f"{kind}.differs",
                severity=ERROR,
                message=f"{shown}: row {key_of(key)} differs in {', '.join(cols)}",
                details={"table": table, "key": key_of(key), "columns": cols},
            )
        )
    return TableDiff(
        table=table,
        expected_rows=len(exp),
        actual_rows=len(act),
        expected_digest=row_digest(exp.values()),
        actual_digest=row_digest(act.values()),
        findings=tuple(findings),
    )


def state_summary(state: WorldState) -> dict[str, int]:
    """Records per key prefix."""
    return dict(Counter(key.split("/", 1)[0] for key, _ in state.items()))
