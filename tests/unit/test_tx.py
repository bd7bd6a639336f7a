"""Transactions: encoding, tx id, signature and size checks."""

from __future__ import annotations

import pytest

from ledger.hashing import canonical_bytes, sha256
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
