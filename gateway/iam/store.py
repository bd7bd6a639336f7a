"""Reads of the IAM tables and the gateway-owned secrets (signing keys, setup credential).

Theory of operation
-------------------
* :func:`load_state` reads the projection into an :class:`~gateway.iam.state.IamState` (the
  contract test compares it with the reference fold). The gateway decides about principals
  from its IAM view of the signed topic instead (D74, :mod:`gateway.iam.view`).
* Data keys (per-user, wrapped under the KEK): :mod:`gateway.iam.data_keys`.
* Signing keys: private halves sealed under the master key; :func:`load_key_ring` builds the
  :class:`~gateway.auth.tokens.KeyRing`, creating the first key if there is none.
* Setup credential: only its SHA-256, sealed under the master key (D70,
  :mod:`gateway.iam.sealed_rows`), is stored; it is consumed (and erased) in the transaction
  that creates the first administrator.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from gateway.auth.crypto import (
    CryptoError,
    MasterKey,
    open_with_master,
    seal_with_master,
)
from gateway.auth.tokens import (
    KeyRing,
    PublishedKey,
    SigningKey,
    key_id,
    raw_public,
)
from gateway.iam import sealed_rows
from gateway.iam.errors import TamperedRow
from gateway.iam.state import IamState, Principal, PrincipalKind
from runtime.pg import Conn

SETUP_PREFIX = "pantheon-setup-"


def load_state(conn: Conn, institution: str) -> IamState:
    """The projected IAM state of the institution."""
    principals: dict[str, Principal] = {}
    logins: dict[str, str] = {}
    for uid, kind, login, owner, disabled, forgotten in conn.execute(
        "SELECT user_id, kind, login, is_owner, disabled, forgotten FROM iam_users"
    ):
        k: PrincipalKind = "service" if kind == "service" else "user"
        principals[uid] = Principal(
            id=uid, kind=k, login=login, owner=owner, disabled=disabled, forgotten=forgotten
        )
        logins[login] = uid
    groups = frozenset(r[0] for r in conn.execute("SELECT name FROM iam_groups"))
    members: dict[str, set[str]] = {}
    for uid, group in conn.execute("SELECT user_id, group_name FROM iam_memberships"):
        members.setdefault(uid, set()).add(group)
    grants: dict[str, set[str]] = {}
    for subject, perm in conn.execute("SELECT subject, permission FROM iam_grants"):
        grants.setdefault(subject, set()).add(perm)
    return IamState(
        institution=institution,
        principals=principals,
        logins=logins,
        groups=groups,
        members={k: frozenset(v) for k, v in members.items()},
        grants={k: frozenset(v) for k, v in grants.items()},
    )


# -- the service's reads of users and events ---------------------------------------------------


# -- signing keys -----------------------------------------------------------------------------
def _purpose(institution: str, kid: str) -> str:
    return f"signing-key:{institution}:{kid}"


def add_signing_key(conn: Conn, master: MasterKey, institution: str, now_s: int) -> SigningKey:
    """Create a new current signing key; every older key is retired at ``now_s``."""
    key = SigningKey(Ed25519PrivateKey.generate(), now_s)
    raw = key.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    conn.execute(
        "UPDATE iam_signing_keys SET retired_at_s = %s WHERE retired_at_s IS NULL", (now_s,)
    )
    conn.execute(
        "INSERT INTO iam_signing_keys (kid, public_key, sealed_private, created_at_s) "
        "VALUES (%s, %s, %s, %s)",
        (
            key.kid,
            key.public.public_bytes(Encoding.Raw, PublicFormat.Raw),
            seal_with_master(master, _purpose(institution, key.kid), raw),
            now_s,
        ),
    )
    return key


def load_key_ring(
    conn: Conn, master: MasterKey, institution: str, now_s: int, max_ttl_s: int
) -> KeyRing:
    """The institution's key ring; creates the first signing key if there is none.

    Retired keys whose tokens have all expired (``retired_at + max_ttl``) are left out.
    """
    conn.execute("LOCK TABLE iam_signing_keys IN SHARE ROW EXCLUSIVE MODE")
    rows = conn.execute(
        "SELECT kid, public_key, sealed_private, created_at_s, retired_at_s "
        "FROM iam_signing_keys ORDER BY created_at_s DESC, kid"
    ).fetchall()
    current = next((r for r in rows if r[4] is None), None)
    if current is None:
        key = add_signing_key(conn, master, institution, now_s)
    else:
        raw = open_with_master(master, _purpose(institution, current[0]), bytes(current[2]))
        key = SigningKey(Ed25519PrivateKey.from_private_bytes(raw), int(current[3]))
    retired = tuple(
        published
        for r in rows
        if r[4] is not None and int(r[4]) + max_ttl_s > now_s and r[0] != key.kid
        if (published := _retired_key(master, institution, r)) is not None
    )
    return KeyRing(key, retired)


def _retired_key(master: MasterKey, institution: str, row: Any) -> PublishedKey | None:
    """A retired key's public half, believed only from its sealed private half (PostgreSQL
    is not trusted: a row's ``public_key`` column alone would let whoever can write the table
    mint tokens); None, with a warning, for a row that does not open under the master key
    with its own kid and institution, or whose columns disagree with what it seals."""
    kid, public, sealed, _created, retired_at = row
    try:
        raw = open_with_master(master, _purpose(institution, kid), bytes(sealed))
        derived = SigningKey(Ed25519PrivateKey.from_private_bytes(raw)).public
    except (CryptoError, ValueError) as exc:
        sealed_rows.log_tampered(institution, TamperedRow("iam_signing_keys", kid, str(exc)))
        return None
    if key_id(derived) != kid or raw_public(derived) != bytes(public):
        why = "its kid or public key is not the sealed key's"
        sealed_rows.log_tampered(institution, TamperedRow("iam_signing_keys", kid, why))
        return None
    return PublishedKey(kid, derived, int(retired_at))


# -- setup credential -------------------------------------------------------------------------
def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_setup_credential(conn: Conn, master: MasterKey, institution: str) -> str:
    """Store the sealed hash of a fresh setup credential (replacing an unused one); return
    it. Sealed under the master key (D70): a hash written into the table opens nothing."""
    token = SETUP_PREFIX + secrets.token_urlsafe(24)
    conn.execute(
        "INSERT INTO iam_setup (institution, token_hash) VALUES (%s, %s) "
        "ON CONFLICT (institution) DO UPDATE SET token_hash = EXCLUDED.token_hash, "
        "created_at = now(), consumed_at = NULL",
        (institution, sealed_rows.seal_setup_digest(master, institution, _digest(token))),
    )
    return token


def check_setup_credential(conn: Conn, master: MasterKey, institution: str, token: str) -> bool:
    """Lock the setup row and tell whether ``token`` is its unused credential (a row that
    does not open under the master key is logged and refused)."""
    row = conn.execute(
        "SELECT token_hash FROM iam_setup WHERE institution = %s AND consumed_at IS NULL "
        "FOR UPDATE",
        (institution,),
    ).fetchone()
    if row is None:
        return False
    try:
        digest = sealed_rows.open_setup_digest(master, institution, bytes(row[0]))
    except TamperedRow as exc:
        sealed_rows.log_tampered(institution, exc)
        return False
    return hmac.compare_digest(digest, _digest(token))


def consume_setup_credential(conn: Conn, institution: str) -> None:
    """Mark the setup credential used and erase it (same transaction as
    :func:`check_setup_credential`): resetting ``consumed_at`` revives nothing."""
    conn.execute(
        "UPDATE iam_setup SET consumed_at = now(), token_hash = ''::bytea WHERE institution = %s",
        (institution,),
    )


def has_owner(conn: Conn) -> bool:
    """True once the institution administrator exists in the projection."""
    return conn.execute("SELECT EXISTS (SELECT 1 FROM iam_users WHERE is_owner)").fetchone() == (
        True,
    )
