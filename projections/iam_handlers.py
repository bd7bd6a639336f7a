"""The IAM projection's SQL, one handler per event schema (D21).

Each event maps to one or two idempotent statements that mirror
:func:`gateway.iam.state.evolve`: contradictory events (a second registration of a login, a
member of an unknown group) are ignored, never fatal, so any replay of the same log yields the
same tables. The projection (:mod:`projections.iam`), the audit's fold
(:mod:`readers.audit_iam`) and the contract test run these same handlers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

Record = dict[str, Any]


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

# The stored objects' events (D23) share the topic and its signatures: this projection
# verifies them like every other event and records its verdict in ``iam_events``; their rows
# are written by the objects projection (projections/objects.py), which follows that verdict.
OBJECT_EVENTS = frozenset({"pantheon.ObjectStored", "pantheon.ObjectAccessChanged"})


def _object_event(cur: psycopg.Cursor[Any], r: Record) -> None:
    """Accepted here, projected by :mod:`projections.objects`."""


HANDLERS.update(dict.fromkeys(OBJECT_EVENTS, _object_event))
