"""Keys: deterministic derivation, key ids, domain-separated signatures."""

from __future__ import annotations

import hashlib

import pytest

from ledger.errors import InvalidEvent
from ledger.keys import TX_DOMAIN, VOTE_DOMAIN, KeyPair, key_id, verify
from tests.unit.chain_helpers import seed


def test_from_seed_is_deterministic_and_key_id_is_sha256() -> None:
    a, b = KeyPair.from_seed(seed("a")), KeyPair.from_seed(seed("a"))
    assert a.public_key == b.public_key and len(a.public_key) == 32
    assert a.key_id == hashlib.sha256(a.public_key).digest() == key_id(a.public_key)
    assert "seed" not in repr(a) and a.describe()["key_id"] == a.key_id.hex()


def test_rfc8032_test_vector_1() -> None:
    pair = KeyPair.from_seed(
        bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    )
    assert pair.public_key.hex() == (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    )


def test_sign_verify_and_domain_separation() -> None:
    pair = KeyPair.from_seed(seed("k"))
    sig = pair.sign(TX_DOMAIN, b"message")
    assert verify(pair.public_key, sig, TX_DOMAIN, b"message")
    assert not verify(pair.public_key, sig, VOTE_DOMAIN, b"message")
    assert not verify(pair.public_key, sig, TX_DOMAIN, b"messagf")
    assert not verify(pair.public_key, sig[:-1], TX_DOMAIN, b"message")
    assert not verify(b"\x00" * 32, sig, TX_DOMAIN, b"message")


def test_bad_seed_and_key_lengths() -> None:
    with pytest.raises(InvalidEvent):
        KeyPair.from_seed(b"short")
    with pytest.raises(InvalidEvent):
        key_id(b"short")
