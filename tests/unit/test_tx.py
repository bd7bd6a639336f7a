"""Transactions: encoding, tx id, signature and size checks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.hashing import canonical_bytes, sha256
from ledger.keys import KeyPair
from ledger.results import ResultCode
from ledger.tx import TxRejected, body_record, parse_tx, sign_tx
from schemas.codec import decode, encode
from tests.unit.chain_helpers import key

ARGS = {"data_id": "d1", "sha256": b"\x01" * 32, "metadata": ""}


def test_parse_signed_tx() -> None:
    signer = key("alice")
    raw = sign_tx(signer, chain_id="c", nonce=3, operation="AnchorData", args=ARGS)
    tx = parse_tx(raw)
    assert (tx.sender, tx.nonce, tx.operation, tx.chain_id) == (signer.key_id, 3, "AnchorData", "c")
    body = body_record("c", signer.key_id, 3, "AnchorData", ARGS)
    assert tx.tx_id == sha256(canonical_bytes("TxBody", body))
    assert tx.size == len(raw)


def test_too_large_malformed_and_bad_signature() -> None:
    signer = key("alice")
    raw = sign_tx(signer, chain_id="c", nonce=0, operation="AnchorData", args=ARGS)
    with pytest.raises(TxRejected) as info:
        parse_tx(raw, max_tx_bytes=len(raw) - 1)
    assert info.value.code is ResultCode.TOO_LARGE
    with pytest.raises(TxRejected) as info:
        parse_tx(raw[:-3])
    assert info.value.code is ResultCode.MALFORMED
    _, env = decode(raw)
    forged = encode("TxEnvelope", {**env, "body": {**env["body"], "nonce": 1}})
    with pytest.raises(TxRejected) as info:
        parse_tx(forged)
    assert info.value.code is ResultCode.BAD_SIGNATURE and info.value.tx_id is not None
    other = key("mallory")
    wrong_key = encode("TxEnvelope", {**env, "public_key": other.public_key})
    with pytest.raises(TxRejected) as info:
        parse_tx(wrong_key)
    assert info.value.code is ResultCode.BAD_SIGNATURE


def test_short_signature_is_malformed() -> None:
    signer = key("alice")
    _, env = decode(sign_tx(signer, chain_id="c", nonce=0, operation="AnchorData", args=ARGS))
    with pytest.raises(TxRejected) as info:
        parse_tx(encode("TxEnvelope", {**env, "signature": b"x"}))
    assert info.value.code is ResultCode.MALFORMED


@settings(max_examples=60, deadline=None)
@given(
    nonce=st.integers(min_value=0, max_value=2**62),
    data_id=st.text(max_size=80),
    metadata=st.text(max_size=300),
    digest=st.binary(min_size=0, max_size=64),
)
def test_body_slice_is_the_canonical_encoding(
    nonce: int, data_id: str, metadata: str, digest: bytes
) -> None:
    """parse_tx hashes the body bytes sliced from the wire; they must equal re-encoding."""
    key = KeyPair.from_seed(bytes(range(32)))
    args = {"data_id": data_id, "sha256": digest, "metadata": metadata}
    raw = sign_tx(key, chain_id="c", nonce=nonce, operation="AnchorData", args=args)
    body = body_record("c", key.key_id, nonce, "AnchorData", args)
    tx = parse_tx(raw, max_tx_bytes=1 << 20)
    assert tx.tx_id == sha256(canonical_bytes("TxBody", body))
