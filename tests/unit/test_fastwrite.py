"""The compiled canonical encoder against fastavro's validate-and-write (the reference, D51).

Every schema of the registry, valid values and hostile ones (wrong types, bools for ints,
out-of-range ints, bytearrays, unencodable strings, missing and extra fields, wrong union
names, ``-type`` keys, dict subclasses): where the fast path writes bytes they equal
fastavro's, and :func:`schemas.codec.canonical` answers exactly as the reference does
(the same bytes, or a CodecError with the same code and message).
"""

from __future__ import annotations

import collections
import enum
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import codec, fastwrite
from schemas.errors import CodecError

REGISTRY = codec.registry()
NAMES = sorted(REGISTRY.names())


class Small(enum.IntEnum):
    ONE = 1


def _junk() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.sampled_from([2**31, -(2**31) - 1, 2**63, -(2**63) - 1, Small.ONE, 1.0, 0.5]),
        st.binary(max_size=4).map(bytearray),
        st.sampled_from(["\ud800", "a\udfff", "ACTIVE", "OPEN", "pantheon.KeyState"]),
        st.tuples(st.sampled_from(["pantheon.KeyState", "pantheon.Nope", "null"]), st.none()),
        st.tuples(st.text(max_size=3)),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        st.lists(st.integers(), max_size=2),
    )


def _values(schema: Any, named: dict[str, Any], hostile: bool, depth: int = 0) -> Any:
    valid = _valid(schema, named, hostile, depth)
    return st.one_of(valid, _junk()) if hostile else valid


def _valid(schema: Any, named: dict[str, Any], hostile: bool, depth: int) -> Any:
    if isinstance(schema, str):
        primitive = {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": st.integers(min_value=-(2**31), max_value=2**31 - 1),
            "long": st.integers(min_value=-(2**63), max_value=2**63 - 1),
            "string": st.text(max_size=8),
            "bytes": st.binary(max_size=40),
        }.get(schema)
        if primitive is not None:
            return primitive
        return _valid(named[schema], named, hostile, depth + 1)
    if isinstance(schema, list):
        others = [b for b in schema if b != "null"]
        branches: list[st.SearchStrategy[Any]] = [st.none()] if "null" in schema else []
        for branch in others:
            name = branch["name"] if isinstance(branch, dict) else branch
            inner = _values(branch, named, hostile, depth + 1)
            if (
                isinstance(named.get(name, branch), dict)
                and named.get(name, branch).get("type") == "record"
            ):
                branches.append(st.tuples(st.just(name), inner))
            if len(others) == 1:
                branches.append(inner)
        return st.one_of(branches)
    kind = schema["type"]
    if kind == "record":
        named.setdefault(schema["name"], schema)
        fields = {
            f["name"]: _values(f["type"], named, hostile, depth + 1) for f in schema["fields"]
        }
        record = st.fixed_dictionaries(fields)
        if not hostile:
            return record
        return st.one_of(
            record,
            record.map(lambda r: dict(list(r.items())[1:])),  # a missing field
            record.map(lambda r: {**r, "extra": 1}),
            record.map(lambda r: {**r, "-type": "pantheon.Other"}),
            record.map(collections.OrderedDict),
        )
    if kind == "enum":
        named.setdefault(schema["name"], schema)
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        items = _values(schema["items"], named, hostile, depth + 1)
        lists = st.lists(items, max_size=3 if depth < 6 else 0)
        return st.one_of(lists, lists.map(tuple)) if hostile else lists
    return _valid(kind, named, hostile, depth + 1)


def _reference(entry: Any, value: Any) -> bytes | tuple[str, str]:
    try:
        return codec.reference_canonical(entry, value)
    except CodecError as exc:
        return (exc.reason, str(exc))


def _canonical(name: str, value: Any) -> bytes | tuple[str, str]:
    try:
        return codec.canonical(name, value)
    except CodecError as exc:
        return (exc.reason, str(exc))


def test_every_schema_of_the_registry_compiles() -> None:
    assert [n for n in NAMES if fastwrite.compile_encoder(REGISTRY.by_name(n).parsed) is None] == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), name=st.sampled_from(NAMES))
def test_valid_records_are_written_by_the_fast_path_as_fastavro_writes_them(
    data: st.DataObject, name: str
) -> None:
    entry = REGISTRY.by_name(name)
    value = data.draw(_values(entry.parsed, {}, hostile=False))
    encoder = fastwrite.compile_encoder(entry.parsed)
    assert encoder is not None
    assert fastwrite.encode(encoder, value) == codec.reference_canonical(entry, value)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), name=st.sampled_from(NAMES))
def test_hostile_records_get_the_reference_answer(data: st.DataObject, name: str) -> None:
    entry = REGISTRY.by_name(name)
    value = data.draw(_values(entry.parsed, {}, hostile=True))
    expected = _reference(entry, value)
    encoder = fastwrite.compile_encoder(entry.parsed)
    assert encoder is not None
    try:
        fast = fastwrite.encode(encoder, value)
    except fastwrite.Declined:
        pass
    else:  # the fast path never writes what fastavro refuses, nor other bytes
        assert fast == expected
    assert _canonical(name, value) == expected


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        ("long", True),
        ("long", 2**63),
        ("int", 2**31),
        ("long", Small.ONE),
        ("bytes", bytearray(b"x")),
        ("string", "\ud800"),
        ({"type": "array", "items": "long"}, "ab"),
        (["null", "string", "long"], 5),
    ],
)
def test_values_outside_the_strict_subset_are_declined(schema: Any, value: Any) -> None:
    encoder = fastwrite.compile_encoder(schema)
    assert encoder is not None
    with pytest.raises(fastwrite.Declined):
        fastwrite.encode(encoder, value)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "map", "values": "long"},
        {"type": "fixed", "name": "F", "size": 4},
        "double",
        {"type": "long", "logicalType": "timestamp-millis"},
        {
            "type": "record",
            "name": "pantheon.Node",
            "fields": [{"name": "next", "type": ["null", "pantheon.Node"]}],
        },
    ],
)
def test_schemas_outside_the_fast_path_are_not_compiled(schema: Any) -> None:
    assert fastwrite.compile_encoder(schema) is None


def test_varints_match_the_avro_zigzag_encoding() -> None:
    assert fastwrite.long_bytes(0) == b"\x00"
    assert fastwrite.long_bytes(-1) == b"\x01"
    assert fastwrite.long_bytes(63) == b"\x7e"
    assert fastwrite.long_bytes(64) == b"\x80\x01"
    assert fastwrite.long_bytes(-(2**63)) == b"\xff" * 9 + b"\x01"
    assert fastwrite.long_bytes(2**63 - 1) == b"\xfe" + b"\xff" * 8 + b"\x01"
