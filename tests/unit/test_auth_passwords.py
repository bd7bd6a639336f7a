"""scrypt password hashes: salts, parameters in the string, constant-time verification."""

from __future__ import annotations

import pytest

from gateway.auth.passwords import (
    FAST,
    ScryptParams,
    WeakPassword,
    check_password_policy,
    hash_password,
    needs_rehash,
    verify_password,
)


def test_hash_verifies_and_records_its_parameters() -> None:
    stored = hash_password("correct horse", FAST)
    assert stored.startswith("scrypt$4$8$1$")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsE", stored)


def test_each_hash_has_its_own_salt() -> None:
    assert hash_password("same password", FAST) != hash_password("same password", FAST)


def test_fixed_salt_is_deterministic_vector() -> None:
    a = hash_password("pw-123456", FAST, salt=b"\x01" * 16)
    assert a == hash_password("pw-123456", FAST, salt=b"\x01" * 16)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plain",
        "scrypt$4$8$1$",
        "scrypt$x$8$1$AAAA$AAAA",
        "bcrypt$4$8$1$a$b",
        "scrypt$99$8$1$a$b",
    ],
)
def test_malformed_hashes_never_verify(stored: str) -> None:
    assert not verify_password("anything", stored)
    assert needs_rehash(stored)


def test_needs_rehash_when_parameters_rise() -> None:
    stored = hash_password("pw-123456", FAST)
    assert not needs_rehash(stored, FAST)
    assert needs_rehash(stored, ScryptParams(log_n=5))
    assert needs_rehash(stored, ScryptParams(log_n=4, r=16))


def test_policy() -> None:
    check_password_policy("eight ch")
    with pytest.raises(WeakPassword):
        check_password_policy("short")
    with pytest.raises(WeakPassword):
        check_password_policy("x" * 1025)
    with pytest.raises(ValueError):
        ScryptParams(log_n=40)
