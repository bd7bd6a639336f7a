"""Codec: single-object encoding, fingerprints, evolution and hostile input."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

import pytest
from fastavro.schema import fingerprint
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import codec
from schemas.errors import CodecError
from schemas.registry import Registry, crc64_avro
from schemas.wirecheck import WireChecker

ENVELOPE = {
    "body": {
        "chain_id": "c",
        "sender": b"s" * 32,
        "nonce": 7,
        "payload": ("pantheon.AnchorData", {"data_id": "d", "sha256": b"h" * 32, "metadata": "{}"}),
    },
    "public_key": b"k" * 32,
    "signature": b"g" * 64,
}


def test_crc64_avro_matches_spec_vector_and_fastavro() -> None:
    # The Avro specification's test data: fingerprint of the schema "null".
    assert crc64_avro(b'"null"') == 7195948357588979594
    reg = codec.registry()
    for name in reg.names():
        entry = reg.by_name(name)
        assert fingerprint(entry.canonical_form, "CRC-64-AVRO") == entry.fingerprint_bytes.hex()


def test_single_object_header() -> None:
    raw = codec.encode("TxEnvelope", ENVELOPE)
    entry = codec.registry().by_name("TxEnvelope")
    assert raw[:2] == b"\xc3\x01"
    assert raw[2:10] == entry.fingerprint.to_bytes(8, "little")
    assert raw[10:] == codec.canonical("TxEnvelope", ENVELOPE)


def test_roundtrip_and_union_tuple() -> None:
    name, record = codec.decode(codec.encode("TxEnvelope", ENVELOPE))
    assert name == "pantheon.TxEnvelope"
    assert record == ENVELOPE


def test_every_event_of_the_design_has_a_schema() -> None:
    names = set(codec.registry().names())
    for event in [
        "TxEnvelope",
        "TimeToCut",
        "BlockHeader",
        "BlockVote",
        "QuorumCertificate",
        "FinalizedBlock",
        "Receipt",
        "DeviceRecord",
        "UserRegistered",
        "PermissionGranted",
        "ProposeMember",
        "ProposeRemoval",
        "CastVote",
        "AddOperator",
        "RemoveOperator",
        "RegisterIdentity",
        "RevokeIdentity",
        "RotateKey",
        "AnchorData",
        "CommitBatch",
        "RegisterAsset",
        "TransferAsset",
    ]:
        assert f"pantheon.{event}" in names


def test_expected_schema_is_enforced() -> None:
    raw = codec.encode("TimeToCut", {"chain_id": "c", "height": 1, "producer": b""})
    with pytest.raises(CodecError) as info:
        codec.decode(raw, "TxEnvelope")
    assert info.value.reason == "unexpected_schema"


def test_bad_record_is_codec_error() -> None:
    with pytest.raises(CodecError):
        codec.encode("TimeToCut", {"chain_id": "c", "height": "one", "producer": b""})
    with pytest.raises(CodecError):
        codec.encode("NoSuchThing", {})


def test_evolution_adding_a_field_with_default_keeps_old_records_readable() -> None:
    old = json.loads((codec.registry_dir() / "Receipt.avsc").read_text())
    new = {**old, "fields": [*old["fields"], {"name": "note", "type": "string", "default": "-"}]}
    writer_side = Registry({"pantheon.Receipt": old})
    reader_side = Registry({"pantheon.Receipt": new})
    old_entry = reader_side.add(old)
    assert old_entry.fingerprint == writer_side.by_name("Receipt").fingerprint
    assert old_entry.fingerprint != reader_side.by_name("Receipt").fingerprint
    fields = {"tx_id": b"t", "height": 3, "offset": 9, "result_code": 0, "block_hash": b"b"}
    raw = codec.encode("Receipt", fields, reg=writer_side)
    assert codec.decode_as(raw, "Receipt", reg=reader_side) == {**fields, "note": "-"}
    # The old writer's bytes are still decoded as written.
    assert codec.decode(raw, reg=reader_side) == ("pantheon.Receipt", fields)
    # A new field without a default cannot be resolved: the codec's one error, nothing else.
    broken = {**old, "fields": [*old["fields"], {"name": "x", "type": "long"}]}
    reg2 = Registry({"pantheon.Receipt": broken})
    reg2.add(old)
    with pytest.raises(CodecError):
        codec.decode_as(raw, "Receipt", reg=reg2)


def test_truncation_at_every_position_is_codec_error() -> None:
    raw = codec.encode("TxEnvelope", ENVELOPE)
    for cut in range(len(raw)):
        with pytest.raises(CodecError):
            codec.decode(raw[:cut])


def test_trailing_bytes_and_wrong_fingerprint() -> None:
    raw = codec.encode("TxEnvelope", ENVELOPE)
    with pytest.raises(CodecError, match="trailing"):
        codec.decode(raw + b"\x00")
    with pytest.raises(CodecError, match="unknown_fingerprint"):
        codec.decode(raw[:2] + bytes(8) + raw[10:])
    with pytest.raises(CodecError, match="bad_magic"):
        codec.decode(b"\xc3\x02" + raw[2:])


def test_oversized_declared_lengths() -> None:
    prefix = b"\xc3\x01" + codec.registry().by_name("TimeToCut").fingerprint_bytes
    # chain_id string declared 2**62 bytes long.
    with pytest.raises(CodecError, match="truncated"):
        codec.decode(prefix + b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f")
    # a varint longer than 10 bytes
    with pytest.raises(CodecError, match="overflow"):
        codec.decode(prefix + b"\xff" * 11)
    # array of votes with a huge count in a QuorumCertificate
    qc = b"\xc3\x01" + codec.registry().by_name("QuorumCertificate").fingerprint_bytes
    with pytest.raises(CodecError):
        codec.decode(qc + b"\x02\x00" + b"\xfe\xff\xff\xff\x0f")
    with pytest.raises(CodecError, match="too_large"):
        codec.decode(prefix + bytes(codec.MAX_MESSAGE_BYTES))


def test_non_bytes_input() -> None:
    with pytest.raises(CodecError):
        codec.decode("text")  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_after_a_valid_header_is_codec_error_or_a_record(garbage: bytes) -> None:
    for name in ["TxEnvelope", "FinalizedBlock", "WriteSet", "BlockVote"]:
        prefix = b"\xc3\x01" + codec.registry().by_name(name).fingerprint_bytes
        try:
            decoded_name, record = codec.decode(prefix + garbage)
        except CodecError:
            continue
        assert decoded_name == f"pantheon.{name}"
        assert isinstance(record, dict)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_else(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        codec.decode(data)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=255))
def test_mutated_envelope_is_codec_error_or_a_record(position: int, value: int) -> None:
    raw = bytearray(codec.encode("TxEnvelope", ENVELOPE))
    raw[position % len(raw)] = value
    with contextlib.suppress(CodecError):
        codec.decode(bytes(raw))


def test_zero_size_items_and_non_canonical_input_are_refused() -> None:
    nulls = WireChecker({"type": "array", "items": "null"})
    nulls.check(b"\x04\x00")  # two nulls
    with pytest.raises(CodecError, match="too_many_items"):
        nulls.check(b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f\x00")
    strings = WireChecker({"type": "map", "values": "string"})
    strings.check(b"\x02\x02k\x02v\x00")
    with pytest.raises(CodecError, match="bad_utf8"):
        strings.check(b"\x02\x02\xff\x02v\x00")
    with pytest.raises(CodecError, match="non_canonical"):
        WireChecker("long").check(b"\x80\x00")
    with pytest.raises(CodecError, match="bad_boolean"):
        WireChecker("boolean").check(b"\x02")


def _verdict(check: Callable[[bytes], None], body: bytes) -> str:
    try:
        check(body)
    except CodecError as exc:
        return exc.reason
    return "ok"


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(codec.registry().names())), st.binary(max_size=80))
def test_compiled_checker_agrees_with_the_walker_on_any_bytes(name: str, body: bytes) -> None:
    """The compiled wire check gives the walker's verdict (same reason) for every schema."""
    checker = WireChecker(codec.registry().by_name(name).expanded)
    assert checker.compiled
    assert _verdict(checker.check, body) == _verdict(checker.walk_check, body)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=400), st.binary(min_size=1, max_size=3))
def test_compiled_checker_agrees_with_the_walker_on_mutated_envelopes(
    position: int, patch: bytes
) -> None:
    checker = WireChecker(codec.registry().by_name("TxEnvelope").expanded)
    body = codec.encode("TxEnvelope", ENVELOPE)[codec.HEADER_BYTES :]
    at = position % (len(body) + 1)
    verdicts = set()
    for candidate in (body, body[:at] + patch + body[at + len(patch) :], body[:at] + patch):
        verdict = _verdict(checker.check, candidate)
        assert verdict == _verdict(checker.walk_check, candidate)
        verdicts.add(verdict)
    assert "ok" in verdicts  # the unmutated envelope passes both


def test_recursive_schemas_use_the_walker() -> None:
    node = {
        "type": "record",
        "name": "Node",
        "namespace": "t",
        "fields": [{"name": "next", "type": ["null", "t.Node"]}],
    }
    checker = WireChecker(node)
    assert not checker.compiled
    checker.check(b"\x02\x02\x00")  # a chain of three nodes
    with pytest.raises(CodecError, match="truncated"):
        checker.check(b"\x02\x02")


@pytest.mark.parametrize(
    "body",
    [
        b"\x01\x02\x02\x00",  # count -1 with a byte size: legal Avro, not the codec's form
        b"\x02\x02\x02\x02\x00",  # two blocks of one item each
    ],
)
def test_arrays_must_be_one_block(body: bytes) -> None:
    """Avro allows several encodings of one array; the codec accepts only its own, so that
    hashing the bytes as sent (transaction ids) cannot be made to vary (atheris finding)."""
    checker = WireChecker({"type": "array", "items": "long"})
    with pytest.raises(CodecError, match="non_canonical"):
        checker.check(body)
    with pytest.raises(CodecError, match="non_canonical"):
        checker.walk_check(body)
    checker.check(b"\x04\x02\x02\x00")  # the canonical form of [1, 1]
