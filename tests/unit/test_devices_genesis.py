"""Device records and the pure genesis helpers the CLI wires."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.devices import decode_device_record, sign_device_record
from ledger.errors import DecodeError, InvalidEvent
from ledger.genesis import Genesis, plan_consortium
from ledger.merkle import root
from schemas import codec
from tests.unit.chain_helpers import key, seed


def test_device_record_sign_verify_roundtrip() -> None:
    device = key("thermometer")
    rec = sign_device_record(
        device, sequence=1, measured_at_ms=5, content_type="text/plain", payload=b"21.5C"
    )
    assert rec.verify(device.public_key)
    assert not rec.verify(key("other").public_key)
    assert decode_device_record(rec.encode()) == rec
    assert root([rec.leaf()]) != root([])
    with pytest.raises(DecodeError):
        decode_device_record(b"junk")


def test_plan_consortium_and_genesis_encoding() -> None:
    ids = ["b", "a"]
    plan = plan_consortium("c", ids, [seed(str(i)) for i in range(4)])
    assert [f.institution_id for f in plan.genesis.founders] == ["a", "b"]
    assert plan.keys["a"][0].public_key == plan.genesis.founders[0].governance_public_key
    assert Genesis.decode(plan.genesis.encode()) == plan.genesis
    store = plan.keystore("a")
    assert store["governance"]["seed"] == seed("0").hex()
    assert store["operators"][0]["key_id"] == plan.keys["a"][1][0].key_id.hex()
    with pytest.raises(InvalidEvent):
        plan_consortium("c", ids, [seed("x")])
    with pytest.raises(DecodeError):
        Genesis.decode(b"\xc3\x01" + bytes(8))


@settings(max_examples=100, deadline=None)
@given(
    st.text(max_size=40),
    st.binary(max_size=64),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
def test_codec_roundtrip_is_exact_and_canonical(text: str, blob: bytes, number: int) -> None:
    record = {"chain_id": text, "height": number, "producer": blob}
    raw = codec.encode("TimeToCut", record)
    assert codec.decode(raw) == ("pantheon.TimeToCut", record)
    assert codec.encode("TimeToCut", codec.decode(raw)[1]) == raw
