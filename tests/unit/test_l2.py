"""Layer-2 pure parts: the fast wire parser agrees with the codec, bundles, admission, ids."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.devices import decode_device_record, sign_device_record
from ledger.errors import DecodeError, InvalidEvent
from ledger.keys import verify
from ledger.l2 import (
    BUNDLE_KIND,
    RECORD_KIND,
    DeviceInfo,
    Reason,
    admit,
    batch_id,
    decode_device_bundle,
    leaf_message,
    parse_l2,
    sign_device_bundle,
)
from ledger.merkle import root
from schemas.codec import encode
from tests.unit.chain_helpers import key

DEVICE = key("device-l2")
LONGS = st.integers(min_value=0, max_value=2**63 - 1)


@settings(max_examples=150, deadline=None)
@given(
    LONGS,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(max_size=30),
    st.binary(max_size=200),
)
def test_record_parse_agrees_with_codec(
    seq: int, measured: int, ctype: str, payload: bytes
) -> None:
    rec = sign_device_record(
        DEVICE, sequence=seq, measured_at_ms=measured, content_type=ctype, payload=payload
    )
    raw = rec.encode()
    parsed = parse_l2(raw)
    assert parsed.kind == RECORD_KIND
    assert (parsed.device_key_id, parsed.first_sequence, parsed.last_sequence) == (
        DEVICE.key_id,
        seq,
        seq,
    )
    assert parsed.measured_from_ms == measured
    assert parsed.leaf == rec.leaf()
    assert leaf_message(RECORD_KIND, parsed.leaf) == raw
    assert verify(DEVICE.public_key, parsed.signature, b"", parsed.signed)
    assert decode_device_record(raw) == rec


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**40),
    st.lists(
        st.tuples(st.integers(min_value=-(2**40), max_value=2**40), st.binary(max_size=30)),
        min_size=1,
        max_size=40,
    ),
)
def test_bundle_parse_agrees_with_codec(first: int, readings: list[tuple[int, bytes]]) -> None:
    bundle = sign_device_bundle(DEVICE, first_sequence=first, content_type="c", readings=readings)
    raw = bundle.encode()
    parsed = parse_l2(raw)
    assert parsed.kind == BUNDLE_KIND
    assert (parsed.first_sequence, parsed.last_sequence) == (first, first + len(readings) - 1)
    assert parsed.measured_from_ms == min(m for m, _ in readings)
    assert parsed.measured_to_ms == max(m for m, _ in readings)
    assert parsed.leaf == bundle.leaf()
    assert verify(DEVICE.public_key, parsed.signature, b"", parsed.signed)
    assert bundle.verify(DEVICE.public_key)
    assert not bundle.verify(key("other").public_key)
    assert decode_device_bundle(raw) == bundle


def test_parser_refuses_malformed_input() -> None:
    raw = sign_device_record(
        DEVICE, sequence=1, measured_at_ms=2, content_type="t", payload=b"x"
    ).encode()
    bad = [
        b"",
        b"junk",
        raw[:-1],
        raw + b"\x00",
        raw[:10] + b"\x3e" + raw[11:],
        raw[:-65] + b"\x7e" + raw[-64:],
    ]
    bad.append(
        encode(
            "L2Rejected",
            {
                "topic": "t",
                "partition": 0,
                "offset": 0,
                "reason": "r",
                "device_key_id": b"",
                "sequence": 0,
                "raw": b"",
            },
        )
    )
    for value in bad:
        with pytest.raises(DecodeError):
            parse_l2(value)
    # every truncation and every single-byte corruption either fails or still parses exactly
    for i in range(10, len(raw)):
        with pytest.raises(DecodeError):
            parse_l2(raw[:i])


def test_signature_domains_are_separate() -> None:
    rec = sign_device_record(DEVICE, sequence=1, measured_at_ms=2, content_type="t", payload=b"x")
    bundle = sign_device_bundle(DEVICE, first_sequence=1, content_type="t", readings=[(2, b"x")])
    p_rec, p_bundle = parse_l2(rec.encode()), parse_l2(bundle.encode())
    assert not verify(DEVICE.public_key, p_rec.signature, b"", p_bundle.signed)
    assert not verify(DEVICE.public_key, p_bundle.signature, b"", p_rec.signed)


def test_admission_rules() -> None:
    parsed = parse_l2(
        sign_device_record(
            DEVICE, sequence=5, measured_at_ms=0, content_type="", payload=b""
        ).encode()
    )
    active = DeviceInfo(public_key=DEVICE.public_key, institution_id="a", active=True)
    revoked = DeviceInfo(public_key=DEVICE.public_key, institution_id="a", active=False)
    assert admit(parsed, None, True, None) is Reason.UNKNOWN_DEVICE
    assert admit(parsed, revoked, True, None) is Reason.REVOKED_DEVICE
    assert admit(parsed, active, False, None) is Reason.BAD_SIGNATURE
    assert admit(parsed, active, True, 5) is Reason.REPLAY
    assert admit(parsed, active, True, 9) is Reason.REPLAY
    assert admit(parsed, active, True, 4) is None
    assert admit(parsed, active, True, 1) is None  # gaps are allowed
    assert admit(parsed, active, True, None) is None


def test_batch_ids_are_deterministic() -> None:
    assert batch_id("alpha", "pantheon.l2.records", 3, 10, 20) == batch_id(
        "alpha", "pantheon.l2.records", 3, 10, 20
    )
    assert batch_id("alpha", "t", 3, 10, 20) != batch_id("alpha", "t", 3, 10, 21)
    with pytest.raises(InvalidEvent):
        batch_id("alpha", "t", 0, 5, 4)
    with pytest.raises(InvalidEvent):
        batch_id("alpha", "t" * 200, 0, 1, 2)
    with pytest.raises(InvalidEvent):
        sign_device_bundle(DEVICE, first_sequence=0, content_type="", readings=[])
    leaves = [
        parse_l2(
            sign_device_bundle(
                DEVICE, first_sequence=i, content_type="", readings=[(0, b"")]
            ).encode()
        ).leaf
        for i in range(3)
    ]
    assert root(leaves) != root(leaves[:2])
