"""The compiled canonical encoder against fastavro's validate-and-write (the reference, D51).

Every schema of the registry, valid values and hostile ones (wrong types, bools for ints,
out-of-range ints, bytearrays, unencodable strings, missing and extra fields, wrong union
names, ``-type`` keys, dict subclasses): where the fast path writes bytes they equal
fastavro's, and :func:`schemas.codec.canonical` answers exactly as the reference does
(the same bytes, or a CodecError with the same code and message).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import codec, fastread, fastwrite
from schemas.errors import CodecError
from tests.unit.avro_values import Small, values

REGISTRY = codec.registry()
NAMES = sorted(REGISTRY.names())


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
    value = data.draw(values(entry.parsed, {}, hostile=False))
    encoder = fastwrite.compile_encoder(entry.parsed)
    assert encoder is not None
    assert fastwrite.encode(encoder, value) == codec.reference_canonical(entry, value)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), name=st.sampled_from(NAMES))
def test_hostile_records_get_the_reference_answer(data: st.DataObject, name: str) -> None:
    entry = REGISTRY.by_name(name)
    value = data.draw(values(entry.parsed, {}, hostile=True))
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


OUTSIDE = [
    {"type": "map", "values": "long"},
    {"type": "fixed", "name": "F", "size": 4},
    "double",
    {"type": "long", "logicalType": "timestamp-millis"},
    {
        "type": "record",
        "name": "pantheon.Node",
        "fields": [{"name": "next", "type": ["null", "pantheon.Node"]}],
    },
]


@pytest.mark.parametrize("schema", OUTSIDE)
def test_schemas_outside_the_fast_paths_are_compiled_by_neither(schema: Any) -> None:
    assert fastwrite.compile_encoder(schema) is None
    assert fastread.compile_decoder(schema) is None


def test_arrays_of_items_that_take_no_bytes_are_not_read_by_the_fast_path() -> None:
    # the wire check bounds their count instead (MAX_ZERO_SIZE_ITEMS)
    assert fastread.compile_decoder({"type": "array", "items": "null"}) is None


def test_varints_match_the_avro_zigzag_encoding() -> None:
    assert fastwrite.long_bytes(0) == b"\x00"
    assert fastwrite.long_bytes(-1) == b"\x01"
    assert fastwrite.long_bytes(63) == b"\x7e"
    assert fastwrite.long_bytes(64) == b"\x80\x01"
    assert fastwrite.long_bytes(-(2**63)) == b"\xff" * 9 + b"\x01"
    assert fastwrite.long_bytes(2**63 - 1) == b"\xfe" + b"\xff" * 8 + b"\x01"
