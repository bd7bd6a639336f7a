"""Secrets the gateway reads back from PostgreSQL are bound to the master key and the row's
identity (D70): a value written into the table, copied from another row or institution, or
sealed by another master key does not open."""

from __future__ import annotations

import hashlib

import pytest

from gateway.auth.crypto import CryptoError, MasterKey, open_text_with_master, seal_text_with_master
from gateway.auth.passwords import FAST, hash_password
from gateway.iam import sealed_rows
from gateway.iam.errors import TamperedRow

MASTER = MasterKey(b"\x09" * 32)
OTHER = MasterKey(b"\x0a" * 32)


def test_master_text_round_trip_and_refusals() -> None:
    sealed = seal_text_with_master(MASTER, "p", "scrypt$x")
    assert sealed.startswith("menc:v1:") and "scrypt" not in sealed
    assert open_text_with_master(MASTER, "p", sealed) == "scrypt$x"
    for master, purpose, text in (
        (MASTER, "q", sealed),
        (OTHER, "p", sealed),
        (MASTER, "p", "scrypt$x"),
        (MASTER, "p", "menc:v1:!!"),
        (MASTER, "p", sealed[:-4] + "AAAA"),
    ):
        with pytest.raises(CryptoError):
            open_text_with_master(master, purpose, text)


def test_a_credential_opens_only_for_its_account_and_institution() -> None:
    hashed = hash_password("a-secret-of-the-service", FAST)
    sealed = sealed_rows.seal_credential(MASTER, "acme", "s-1", hashed)
    assert sealed_rows.open_credential(MASTER, "acme", "s-1", sealed) == hashed
    refused = [
        (MASTER, "acme", "s-2", sealed),  # copied to another account
        (MASTER, "globex", "s-1", sealed),  # copied to another institution's database
        (OTHER, "acme", "s-1", sealed),  # sealed by another master key
        (MASTER, "acme", "s-1", hashed),  # a bare hash: written into the table, or pre-D70
    ]
    for master, institution, account, stored in refused:
        with pytest.raises(TamperedRow) as caught:
            sealed_rows.open_credential(master, institution, account, stored)
        assert (caught.value.table, caught.value.key) == ("iam_service_accounts", account)


def test_a_setup_digest_opens_only_for_its_institution() -> None:
    digest = hashlib.sha256(b"pantheon-setup-x").digest()
    sealed = sealed_rows.seal_setup_digest(MASTER, "acme", digest)
    assert sealed_rows.open_setup_digest(MASTER, "acme", sealed) == digest
    for master, institution, stored in (
        (MASTER, "globex", sealed),
        (OTHER, "acme", sealed),
        (MASTER, "acme", digest),  # the bare SHA-256 stored before D70
        (MASTER, "acme", b""),  # erased when consumed
    ):
        with pytest.raises(TamperedRow):
            sealed_rows.open_setup_digest(master, institution, stored)
