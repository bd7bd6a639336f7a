"""The audit's checks of what a store holds (:mod:`ledger.audit_stores`): tables, Layer-2
leaves and anchored objects."""

from __future__ import annotations

import hashlib

from ledger.audit_findings import show
from ledger.audit_stores import check_anchor, check_l2_batch, diff_table
from ledger.merkle import root


def test_diff_table_names_rows_and_bytes() -> None:
    cols, keys = ("id", "blob", "n"), ("id",)
    expected = [(1, b"\x00\x01\x02", 5), (2, b"ab", 6), (3, b"x", 7)]
    actual = [(1, b"\x00\x09\x02", 5), (3, b"x", 7), (4, b"y", 8)]
    diff = diff_table("t", cols, keys, expected, actual)
    assert not diff.equal and diff.expected_rows == 3 and diff.actual_rows == 3
    by_kind = {f.kind: f for f in diff.findings}
    assert by_kind["row.missing"].details["key"] == {"id": 2}
    assert by_kind["row.unexpected"].details["key"] == {"id": 4}
    # a missing or unexpected row's bytes read as hex, never as Python b'\\x..' reprs
    assert by_kind["row.missing"].details["expected"] == {"id": 2, "blob": "6162", "n": 6}
    assert by_kind["row.unexpected"].details["got"] == {"id": 4, "blob": "79", "n": 8}
    assert show({"row": {"blob": b"\x00\xff"}, "list": [b"\x01"]}) == {
        "row": {"blob": "00ff"},
        "list": ["01"],
    }
    changed = by_kind["row.differs"].details["columns"]
    assert list(changed) == ["blob"] and changed["blob"]["first_differing_byte"] == 1
    same = diff_table("t", cols, keys, expected, list(reversed(expected)))
    assert same.equal and same.findings == ()


def test_l2_batch_and_anchor_checks() -> None:
    leaves = [f"leaf-{i}".encode() for i in range(5)]
    batch = {"batch_id": "b", "merkle_root": root(leaves), "leaf_count": 5, "height": 3}
    assert check_l2_batch(batch, leaves) == []
    tampered = [*leaves[:2], b"leaf-X", *leaves[3:]]
    assert [f.kind for f in check_l2_batch(batch, tampered)] == ["l2.root_mismatch"]
    assert {f.kind for f in check_l2_batch(batch, leaves[:4])} == {
        "l2.leaf_count",
        "l2.root_mismatch",
    }
    assert [f.kind for f in check_l2_batch(batch, None)] == ["l2.leaves_missing"]
    anchor = {
        "data_id": "d",
        "sha256": hashlib.sha256(b"obj").digest(),
        "height": 2,
        "metadata": '{"content_type":"text/plain","size":3}',  # made by the data proxy
    }
    assert check_anchor(anchor, b"obj") == []
    assert [f.kind for f in check_anchor(anchor, b"obk")] == ["anchor.object_mismatch"]
    assert [f.kind for f in check_anchor(anchor, None)] == ["anchor.object_missing"]
    direct = {**anchor, "metadata": "{}"}  # anchored with the SDK: nothing was stored here
    assert [(f.kind, f.severity) for f in check_anchor(direct, None)] == [
        ("anchor.no_object", "info")
    ]
