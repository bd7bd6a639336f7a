"""The one-pass reader against the wire check and fastavro (the reference, D51).

Bodies of every schema of the registry, written by fastavro from valid values, then mutated
(bytes changed, inserted, removed, cut, appended) or replaced by random bytes: the fast
path either declines or returns exactly the reference's value, and the codec's decoding
answers exactly as the reference does (the same value, or a CodecError with the same reason
and message).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import codec, fastread, fastwrite
from schemas.errors import CodecError
from tests.unit.avro_values import values

REGISTRY = codec.registry()
NAMES = sorted(REGISTRY.names())
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _reference(entry: Any, body: bytes) -> Any:
    try:
        return codec.reference_read(entry, body)
    except CodecError as exc:
        return (exc.reason, str(exc))


def _decoded(name: str, body: bytes) -> Any:
    try:
        return codec.decode_canonical(name, body)
    except CodecError as exc:
        return (exc.reason, str(exc))


def _fast(entry: Any, body: bytes) -> Any:
    decoder = codec._compile_decoder(entry)
    assert decoder is not None
    return fastread.decode(decoder, body)


@st.composite
def _mutated(draw: st.DrawFn, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        at = draw(st.integers(min_value=0, max_value=len(data)))
        kind = draw(st.sampled_from(["set", "insert", "delete", "cut", "append"]))
        byte = draw(
            st.one_of(
                st.sampled_from([0x00, 0x01, 0x02, 0x7F, 0x80, 0xFF, 0xC0, 0xED]),
                st.integers(min_value=0, max_value=255),
            )
        )
        if kind == "set" and at < len(data):
            data[at] = byte
        elif kind == "insert":
            data.insert(at, byte)
        elif kind == "delete" and at < len(data):
            del data[at]
        elif kind == "cut":
            del data[at:]
        else:
            data += bytes([byte]) * draw(st.integers(min_value=1, max_value=11))
    return bytes(data)


def test_every_schema_of_the_registry_compiles() -> None:
    assert [n for n in NAMES if codec._compile_decoder(REGISTRY.by_name(n)) is None] == []


@settings(SETTINGS, max_examples=150)
@given(data=st.data(), name=st.sampled_from(NAMES))
def test_valid_bodies_read_as_fastavro_reads_them(data: st.DataObject, name: str) -> None:
    entry = REGISTRY.by_name(name)
    body = codec.reference_canonical(entry, data.draw(values(entry.parsed, {}, hostile=False)))
    expected = _reference(entry, body)
    fast = _fast(entry, body)  # a valid body is never declined
    if isinstance(expected, dict):
        assert fast == expected
    else:  # an enum's schema: not a record, which the codec refuses either way
        assert not isinstance(fast, dict)
    assert _decoded(name, body) == expected


@settings(SETTINGS, max_examples=1000)
@given(data=st.data(), name=st.sampled_from(NAMES))
def test_mutated_bodies_get_the_reference_answer(data: st.DataObject, name: str) -> None:
    entry = REGISTRY.by_name(name)
    valid = codec.reference_canonical(entry, data.draw(values(entry.parsed, {}, hostile=False)))
    body = data.draw(st.one_of(_mutated(valid), st.binary(max_size=64)))
    expected = _reference(entry, body)
    try:
        fast = _fast(entry, body)
    except fastread.Declined:
        pass
    else:  # the fast path never reads what the reference refuses, nor another value
        if isinstance(fast, dict):
            assert fast == expected
        else:  # an enum's schema: not a record, which the codec refuses either way
            assert not isinstance(expected, dict)
    assert _decoded(name, body) == expected


def test_envelopes_decode_with_their_names_as_fastavro_gives_them() -> None:
    entry = REGISTRY.by_name("TxEnvelope")
    record = {
        "body": {
            "chain_id": "c",
            "sender": bytes(32),
            "nonce": 300,
            "payload": ("pantheon.AnchorData", {"data_id": "d", "sha256": b"", "metadata": "é"}),
        },
        "public_key": bytes(32),
        "signature": bytes(64),
    }
    body = codec.reference_canonical(entry, record)
    assert _fast(entry, body) == record == codec.reference_read(entry, body)


def _record(*types: str) -> dict[str, Any]:
    fields = [{"name": f"f{n}", "type": kind} for n, kind in enumerate(types)]
    return {"type": "record", "name": "pantheon.R", "fields": fields}


@pytest.mark.parametrize(
    ("schema", "body"),
    [
        ("long", b"\x80\x00"),  # a redundant varint byte
        ("long", b"\xff" * 10 + b"\x01"),  # longer than 10 bytes
        ("long", b"\xff" * 9 + b"\x7f"),  # beyond 64 bits
        ("int", b"\x80\x80\x80\x80\x10"),  # beyond 32 bits
        ("boolean", b"\x02"),
        ("string", b"\x04\xed\xa0"),  # cut short
        ("string", b"\x06\xed\xa0\x80"),  # a UTF-8 surrogate
        ("bytes", b"\x03"),  # a negative length
        ({"type": "array", "items": "long"}, b"\x01\x02"),  # a block with a byte size
        ({"type": "array", "items": "long"}, b"\x02\x02\x02"),  # a second block, cut
        ({"type": "array", "items": "long"}, b"\x20\x02"),  # more items than bytes
        (["null", "long"], b"\x04"),  # no such branch
        (_record("bytes", "long"), b"\x01"),  # a negative length (inline), read back as a long
        (_record("string", "long"), b"\x01"),
        (_record("string", "long"), b"\x04\xed\xa0\x02"),  # a UTF-8 surrogate (inline)
        (_record("long", "long"), b"\x80\x00\x02"),  # a redundant varint byte (inline)
    ],
)
def test_bodies_the_wire_check_refuses_are_declined(schema: Any, body: bytes) -> None:
    decoder = fastread.compile_decoder(schema)
    assert decoder is not None
    with pytest.raises(fastread.Declined):
        fastread.decode(decoder, body)


def test_the_reference_switch_uses_only_the_reference_and_answers_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = {"chain_id": "c", "max_block_txs": 5, "max_block_bytes": 9, "block_interval_ms": 1}
    record |= {"max_tx_bytes": 7, "proposal_ttl_blocks": 3, "threshold_num": 2}
    record |= {"threshold_den": 3}
    body = codec.canonical("ChainParams", record)
    message = codec.encode("ChainParams", record)
    expected = codec.decode(message)

    def unused(*_: object) -> None:
        raise AssertionError("a fast path ran")

    codec.use_fast_paths(False)
    try:
        monkeypatch.setattr(fastread, "decode", unused)
        monkeypatch.setattr(fastwrite, "encode", unused)
        assert codec.canonical("ChainParams", record) == body
        assert codec.decode(message) == expected == ("pantheon.ChainParams", record)
    finally:
        codec.use_fast_paths(True)
