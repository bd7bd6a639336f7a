"""The IAM projection: one institution's IAM topic into its users, groups, grants tables.

Theory of operation
-------------------
* Reads ``<prefix>iam.<institution>`` with the shared :class:`~projections.runner.ProjectionRunner`
  (rows and position in one transaction). Each event maps to one or two idempotent SQL
  statements that mirror :func:`gateway.iam.state.evolve`: contradictory events (a second
  registration of a login, a member of an unknown group) are ignored, never fatal, so any
  replay of the same log yields the same tables.
* Personal fields stay sealed in the tables (``encrypted_profile``, ``password_hash``), as on
  the topic; ``UserForgotten`` sets them to NULL. The wrapped data keys live in
  ``iam_data_keys``, owned by the gateway, so a rebuild after a user was forgotten projects
  that user's personal fields as NULL (and their ciphertexts on the topic stay unreadable).
* :func:`reset` empties the projection tables and its positions (not the gateway-owned key,
  signing-key and setup tables): the next runner rebuilds from offset 0.
* A message that does not decode, or of a schema this projection does not know, is logged
  and skipped: one bad record cannot wedge an institution's user management.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Message

from projections.migrate import apply_migrations
from schemas.codec import decode
from schemas.errors import CodecError
from streams.topics import DEFAULT_PREFIX, iam_topic

log = logging.getLogger("pantheon.projections.iam")

MIGRATIONS = Path(__file__).resolve().parent / "migrations" / "iam"
NAMESPACE = "iam"
PROJECTION_TABLES = (
    "iam_users",
    "iam_service_accounts",
    "iam_groups",
    "iam_memberships",
    "iam_grants",
    "iam_revoked_tokens",
)

Record = dict[str, Any]


def projection_name(institution: str) -> str:
    """The runner name (positions key) of an institution's IAM projection."""
    return f"iam.{institution}"


def migrate(conn: psycopg.Connection[Any]) -> list[str]:
    """Create or upgrade the IAM tables (``conn`` outside a transaction)."""
    return apply_migrations(conn, NAMESPACE, MIGRATIONS)


def _user_registered(cur: psycopg.Cursor[Any], r: Record) -> None:
    cur.execute(
        "INSERT INTO iam_users (user_id, kind, login, password_hash, encrypted_profile, "
        "data_key_id, created_by, created_at_ms, updated_at_ms) "
        "VALUES (%s, 'user', %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (
            r["user_id"],
            r["login"],
            r["password_hash"],
            r["encrypted_profile"],
            r["data_key_id"],
            r["actor"],
            r["at_ms"],
            r["at_ms"],
        ),
    )


def _service_account_created(cur: psycopg.Cursor[Any], r: Record) -> None:
    cur.execute(
        "INSERT INTO iam_users (user_id, kind, login, created_by, created_at_ms, updated_at_ms) "
        "VALUES (%s, 'service', %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (r["account_id"], r["name"], r["actor"], r["at_ms"], r["at_ms"]),
    )
    if cur.rowcount == 1:
        cur.execute(
            "INSERT INTO iam_service_accounts (account_id, name, credential_hash, created_by, "
            "created_at_ms) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (r["account_id"], r["name"], r["credential_hash"], r["actor"], r["at_ms"]),
        )


def _admin_bootstrapped(cur: psycopg.Cursor[Any], r: Record) -> None:
    cur.execute(
        "UPDATE iam_users SET is_owner = true, updated_at_ms = %s WHERE user_id = %s "
        "AND NOT EXISTS (SELECT 1 FROM iam_users WHERE is_owner)",
        (r["at_ms"], r["user_id"]),
    )


def _user_disabled(cur: psycopg.Cursor[Any], r: Record) -> None:
    cur.execute(
        "UPDATE iam_users SET disabled = true, disabled_reason = %s, updated_at_ms = %s "
        "WHERE user_id = %s AND NOT disabled",
        (r["reason"], r["at_ms"], r["user_id"]),
    )


def _user_forgotten(cur: psycopg.Cursor[Any], r: Record) -> None:
    cur.execute(
        "UPDATE iam_users SET disabled = true, forgotten = true, encrypted_profile = NULL, "
        "password_hash = NULL, updated_at_ms = %s WHERE user_id = %s",
        (r["at_ms"], r["user_id"]),
    )


def _password_changed(cur: psycopg.Cursor[Any], r: Record) -> None:
    cur.execute(
        "UPDATE iam_users SET password_hash = %s, updated_at_ms = %s "
        "WHERE user_id = %s AND NOT forgotten",
        (r["password_hash"], r["at_ms"], r["user_id"]),
    )


def _profile_updated(cur: psycopg.Cursor[Any], r: Record) -> None:
    cur.execute(
        "UPDATE iam_users SET encrypted_profile = %s, updated_at_ms = %s "
        "WHERE user_id = %s AND NOT forgotten",
        (r["encrypted_profile"], r["at_ms"], r["user_id"]),
    )


def _group_created(cur: psycopg.Cursor[Any], r: Record) -> None:
    cur.execute(
        "INSERT INTO iam_groups (name, description, created_by, created_at_ms) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (r["group"], r["description"], r["actor"], r["at_ms"]),
    )


def _membership_changed(cur: psycopg.Cursor[Any], r: Record) -> None:
    if r["added"]:
        cur.execute(
            "INSERT INTO iam_memberships (user_id, group_name, added_by, added_at_ms) "
            "SELECT %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM iam_users WHERE user_id = %s) "
            "AND EXISTS (SELECT 1 FROM iam_groups WHERE name = %s) ON CONFLICT DO NOTHING",
            (r["user_id"], r["group"], r["actor"], r["at_ms"], r["user_id"], r["group"]),
        )
    else:
        cur.execute(
            "DELETE FROM iam_memberships WHERE user_id = %s AND group_name = %s",
            (r["user_id"], r["group"]),
        )


def _permission_granted(cur: psycopg.Cursor[Any], r: Record) -> None:
    cur.execute(
        "INSERT INTO iam_grants (subject, permission, granted_by, granted_at_ms) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (r["subject"], r["permission"], r["actor"], r["at_ms"]),
    )


def _permission_revoked(cur: psycopg.Cursor[Any], r: Record) -> None:
    cur.execute(
        "DELETE FROM iam_grants WHERE subject = %s AND permission = %s",
        (r["subject"], r["permission"]),
    )


def _token_revoked(cur: psycopg.Cursor[Any], r: Record) -> None:
    if r["jti"]:
        cur.execute(
            "INSERT INTO iam_revoked_tokens (jti, user_id, expires_at_ms, revoked_at_ms) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (r["jti"], r["user_id"], r["expires_at_ms"], r["at_ms"]),
        )
    else:
        cur.execute(
            "UPDATE iam_users SET tokens_not_before_ms = GREATEST(tokens_not_before_ms, %s) "
            "WHERE user_id = %s",
            (r["at_ms"], r["user_id"]),
        )


HANDLERS: dict[str, Callable[[psycopg.Cursor[Any], Record], None]] = {
    "pantheon.UserRegistered": _user_registered,
    "pantheon.ServiceAccountCreated": _service_account_created,
    "pantheon.AdminBootstrapped": _admin_bootstrapped,
    "pantheon.UserDisabled": _user_disabled,
    "pantheon.UserForgotten": _user_forgotten,
    "pantheon.UserPasswordChanged": _password_changed,
    "pantheon.UserProfileUpdated": _profile_updated,
    "pantheon.GroupCreated": _group_created,
    "pantheon.GroupMembershipChanged": _membership_changed,
    "pantheon.PermissionGranted": _permission_granted,
    "pantheon.PermissionRevoked": _permission_revoked,
    "pantheon.TokenRevoked": _token_revoked,
}

OBJECT_EVENTS = frozenset({"pantheon.ObjectStored", "pantheon.ObjectAccessChanged"})


class IamProjection:
    """Projection of one institution's IAM topic (see the module docstring)."""

    def __init__(self, institution: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.institution = institution
        self.topic = iam_topic(institution).name(prefix)
        self.name = projection_name(institution)

    def topics(self) -> list[str]:
        return [self.topic]

    def migrate(self, conn: psycopg.Connection[Any]) -> list[str]:
        """Create or upgrade the IAM tables (the projector calls it before running)."""
        return migrate(conn)

    def apply(self, cur: psycopg.Cursor[Any], batch: Sequence[Message]) -> None:
        for msg in batch:
            value = msg.value()
            try:
                schema, record = decode(value if isinstance(value, bytes) else b"")
            except CodecError as exc:
                log.warning("skipping undecodable IAM event at offset %s: %s", msg.offset(), exc)
                continue
            if schema in OBJECT_EVENTS:
                continue  # the objects projection's (projections/objects.py, D23)
            handler = HANDLERS.get(schema)
            if handler is None or record.get("institution_id") != self.institution:
                log.warning("skipping %s at offset %s", schema, msg.offset())
                continue
            handler(cur, record)


def reset(conn: psycopg.Connection[Any], institution: str) -> None:
    """Empty the projection tables and positions: the next runner rebuilds from offset 0."""
    with conn.transaction():
        conn.execute(f"TRUNCATE {', '.join(PROJECTION_TABLES)}")
        conn.execute(
            "DELETE FROM projection_positions WHERE projection = %s",
            (projection_name(institution),),
        )
