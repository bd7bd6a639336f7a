"""PostgreSQL write access gains no login through the secrets the gateway reads back (D70).

Against the real broker and PostgreSQL (the ``iam`` fixture of ``test_iam_service``): an
attacker who can write the institution's database replaces a service account's credential
hash with the hash of a secret they know, writes a setup credential of their own (after
clearing ``is_owner`` so the gateway thinks it has no administrator yet), or moves a sealed
password hash or a wrapped data key to another user. Each is refused exactly like a wrong
secret (``LoginFailed``, ``BadSetupCredential``; never a 500), logged with the table and
key, and changes nothing: putting the genuine row back logs in again. Since D74 the gateway
takes a credential or password hash and the owner from its view of the signed topic
(:mod:`gateway.iam.view`), so those rows are not even read (nothing to log); the setup
digest and the wrapped data keys are still read, and still refused when forged.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import psycopg
import pytest

from gateway.auth.passwords import FAST, hash_password
from gateway.iam.bootstrap import ensure_setup_credential
from gateway.iam.errors import AlreadyBootstrapped, BadSetupCredential, LoginFailed
from tests.integration.test_iam_service import MASTER, Iam, _boot, iam

pytestmark = pytest.mark.integration

__all__ = ["iam"]  # the fixture, imported for the tests below


def _sql(iam: Iam, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    """One statement as the attacker (autocommit), its rows if any."""
    with psycopg.connect(iam.dsn, autocommit=True) as conn:
        cur = conn.execute(statement, args)
        return cur.fetchall() if cur.description else []


def _refused_rows(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (r.__dict__["table"], r.__dict__["key"])
        for r in caplog.records
        if r.getMessage().startswith("IAM row refused")
    ]


def test_a_credential_hash_written_into_the_table_logs_nobody_in(
    iam: Iam, caplog: pytest.LogCaptureFixture
) -> None:
    svc = iam.service
    root = _boot(iam)
    account, credential = svc.create_service_account(root, "ingest")
    other, other_credential = svc.create_service_account(root, "export")
    svc.grant(root, account, "chain:write")
    assert svc.login_service(credential, "10.0.0.5").claims.sub == account
    genuine = _sql(
        iam, "SELECT credential_hash FROM iam_service_accounts WHERE account_id = %s", account
    )[0][0]
    assert "scrypt" not in genuine  # sealed on the topic and in the row, not a bare hash

    caplog.set_level(logging.WARNING, logger="pantheon.iam")
    forged = hash_password("a-secret-the-attacker-knows", FAST)
    copied = _sql(
        iam, "SELECT credential_hash FROM iam_service_accounts WHERE account_id = %s", other
    )[0][0]
    other_secret = other_credential.partition(".")[2]
    for stored, secret in ((forged, "a-secret-the-attacker-knows"), (copied, other_secret)):
        _sql(
            iam,
            "UPDATE iam_service_accounts SET credential_hash = %s WHERE account_id = %s",
            stored,
            account,
        )
        with pytest.raises(LoginFailed):
            svc.login_service(f"{account}.{secret}", "10.0.0.6")
    assert _refused_rows(caplog) == []  # not read: the view holds the signed event's hash

    _sql(
        iam,
        "UPDATE iam_service_accounts SET credential_hash = %s WHERE account_id = %s",
        genuine,
        account,
    )
    claims = svc.login_service(credential, "10.0.0.7").claims
    assert claims.sub == account and claims.perms == {"chain:write"}


def test_a_setup_credential_written_into_the_table_creates_no_admin(
    iam: Iam, caplog: pytest.LogCaptureFixture
) -> None:
    svc = iam.service
    known = "pantheon-setup-the-attackers-own"
    digest = hashlib.sha256(known.encode()).digest()
    caplog.set_level(logging.WARNING, logger="pantheon.iam")

    # Before the first administrator: a row of the attacker's own.
    assert ensure_setup_credential(iam.dsn, iam.institution, MASTER) is not None
    _sql(iam, "UPDATE iam_setup SET token_hash = %s", digest)
    with pytest.raises(BadSetupCredential):
        svc.bootstrap_admin(known, "mallory", "mallory-password")

    # After it: the owner is cleared in the table and the spent row is reset (to the
    # attacker's hash, or to the genuine one whose token is known from the setup). The view
    # knows the owner from the signed topic (D74), so neither row is even consulted.
    credential = ensure_setup_credential(iam.dsn, iam.institution, MASTER)
    assert credential is not None
    svc.bootstrap_admin(credential, "root", "root-password")
    _sql(iam, "UPDATE iam_users SET is_owner = false")
    _sql(iam, "UPDATE iam_setup SET consumed_at = NULL")
    with pytest.raises(AlreadyBootstrapped):
        svc.bootstrap_admin(credential, "mallory", "mallory-password")
    _sql(iam, "UPDATE iam_setup SET token_hash = %s", digest)
    with pytest.raises(AlreadyBootstrapped):
        svc.bootstrap_admin(known, "mallory", "mallory-password")
    assert _refused_rows(caplog) == [("iam_setup", iam.institution)]
    assert _sql(iam, "SELECT login FROM iam_users") == [("root",)]


def test_a_moved_password_hash_or_data_key_fails_like_a_wrong_password(
    iam: Iam, caplog: pytest.LogCaptureFixture
) -> None:
    svc = iam.service
    root = _boot(iam)
    alice = svc.create_user(root, "alice", "alice-password")
    bob = svc.create_user(root, "bob", "bob-password")
    caplog.set_level(logging.WARNING, logger="pantheon.iam")
    moves = (
        ("iam_users", "password_hash"),  # bob's sealed hash written into alice's row
        ("iam_data_keys", "wrapped"),  # bob's wrapped data key written into alice's row
    )
    for table, column in moves:
        saved = _sql(iam, f"SELECT {column} FROM {table} WHERE user_id = %s", alice)[0][0]
        _sql(
            iam,
            f"UPDATE {table} SET {column} = (SELECT {column} FROM {table} WHERE user_id = %s) "
            "WHERE user_id = %s",
            bob,
            alice,
        )
        with pytest.raises(LoginFailed):
            svc.login("alice", "bob-password", "10.0.0.8")
        _sql(iam, f"UPDATE {table} SET {column} = %s WHERE user_id = %s", saved, alice)
    # the moved hash is not read (the view holds alice's own, D74); the data key is refused
    assert _refused_rows(caplog) == [("iam_data_keys", alice)]
    assert svc.login("alice", "alice-password", "10.0.0.9").claims.sub == alice
