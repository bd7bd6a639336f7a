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
* Every message is a signed event (D21, :mod:`ledger.iam_events`): it is applied only if a
  SERVICE key of the institution, active on the certified chain at the event's
  ``key_height`` (and at the topic's mark), signed it, and its ``event_id`` was not applied
  before. The :class:`SignerPolicy` says where the key history comes from:
  :class:`ChainSigners` (``chain.key_activity`` of the same database) in every production
  process. Anything else (unsigned, forged, foreign, revoked, replayed, undecodable) is
  refused: logged once, counted in ``pantheon_iam_rejected_total{reason}``, never applied,
  so one bad record cannot wedge an institution's user management. An event whose
  ``key_height`` the projected chain has not reached yet waits (``apply`` returns the
  prefix it applied; the runner retries the rest).
* A signed event is applied only if its ``actor`` was allowed to act
  (:func:`ledger.iam_authz.authorize`) against the state these tables hold, folded forward
  through the batch; otherwise it is refused as ``unauthorized``. The gateway decides from
  the same tables, so live this only catches races; a rebuild folds from the events alone
  (empty tables), so an escalation someone wrote into the tables and made the gateway sign
  is refused there, and the audit (which also folds from events) reports it.
* ``iam_events`` records every applied event (id, offset, key, key height): replays are
  refused by id, and its highest ``key_height`` is the mark.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import psycopg
from confluent_kafka import Message
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge

from ledger.iam_authz import AuthzState, PrincipalFlags, authorize
from ledger.iam_events import (
    KEY_ACTIVITY_COLUMNS,
    SERVICE_ROLE,
    KeyHistory,
    Opened,
    Refusal,
    decide,
    needed_height,
    open_message,
)
from ledger.keys import key_id
from projections.migrate import apply_migrations
from projections.runner import Projection
from runtime.topics import DEFAULT_PREFIX, iam_topic

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
    "iam_events",
)
REJECTED = PromCounter(
    "pantheon_iam_rejected",
    "Messages on an institution's IAM topic refused by its IAM projection, by reason (D21)",
    ["institution", "reason"],
)
WAITING = Gauge(
    "pantheon_iam_waiting_height",
    "Certified height the IAM projection waits for before its next event (0: not waiting)",
    ["institution"],
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

# The stored objects' events (D23) share the topic and its signatures: this projection
# verifies them like every other event and records its verdict in ``iam_events``; their rows
# are written by the objects projection (projections/objects.py), which follows that verdict.
OBJECT_EVENTS = frozenset({"pantheon.ObjectStored", "pantheon.ObjectAccessChanged"})


def _object_event(cur: psycopg.Cursor[Any], r: Record) -> None:
    """Accepted here, projected by :mod:`projections.objects`."""


HANDLERS.update(dict.fromkeys(OBJECT_EVENTS, _object_event))


def load_authz(cur: psycopg.Cursor[Any]) -> AuthzState:
    """The authorization state (:mod:`ledger.iam_authz`) the projection's tables hold."""
    state = AuthzState()
    for uid, login, owner, disabled, forgotten in cur.execute(
        "SELECT user_id, login, is_owner, disabled, forgotten FROM iam_users"
    ).fetchall():
        state.principals[str(uid)] = PrincipalFlags(
            owner=bool(owner), disabled=bool(disabled), forgotten=bool(forgotten)
        )
        state.logins.add(str(login))
    state.groups.update(str(r[0]) for r in cur.execute("SELECT name FROM iam_groups").fetchall())
    for uid, group in cur.execute("SELECT user_id, group_name FROM iam_memberships").fetchall():
        state.members.setdefault(str(uid), set()).add(str(group))
    for subject, perm in cur.execute("SELECT subject, permission FROM iam_grants").fetchall():
        state.grants.setdefault(str(subject), set()).add(str(perm))
    return state


class SignerPolicy(Protocol):
    """Where the IAM projection learns which keys may sign its institution's events (D21)."""

    def chain_height(self, cur: psycopg.Cursor[Any]) -> int:
        """The certified height the key history is known up to (-1: nothing yet)."""
        ...

    def history(self, cur: psycopg.Cursor[Any], key_ids: Sequence[bytes]) -> KeyHistory:
        """The history of ``key_ids`` up to :meth:`chain_height`."""
        ...


class ChainSigners:
    """Production policy: the certified chain projected in the same database
    (``chain.meta`` and ``chain.key_activity``, written by the chain projector)."""

    def chain_height(self, cur: psycopg.Cursor[Any]) -> int:
        try:
            with cur.connection.transaction():  # a savepoint: a missing schema is not fatal
                row = cur.execute("SELECT height FROM chain.meta").fetchone()
        except psycopg.errors.UndefinedTable:
            return -1
        return -1 if row is None else int(row[0])

    def history(self, cur: psycopg.Cursor[Any], key_ids: Sequence[bytes]) -> KeyHistory:
        cur.execute(
            f"SELECT {', '.join(KEY_ACTIVITY_COLUMNS)} FROM chain.key_activity "
            "WHERE key_id = ANY(%s) AND height <= (SELECT height FROM chain.meta)",
            (list(key_ids),),
        )
        return KeyHistory.from_rows(cur.fetchall())


class PinnedSigners:
    """A fixed set of public keys trusted as the institution's IAM keys from height 0, with
    no chain (for processes run without a ledger: unit and gateway tests). Production wiring
    (:mod:`projections.projector`, ``pantheon gateway``, the rebuild) never uses it."""

    def __init__(self, institution: str, public_keys: Sequence[bytes]) -> None:
        self._rows = [
            (key_id(pk), 0, institution, SERVICE_ROLE, True, bytes(pk)) for pk in public_keys
        ]

    def chain_height(self, cur: psycopg.Cursor[Any]) -> int:
        return 0

    def history(self, cur: psycopg.Cursor[Any], key_ids: Sequence[bytes]) -> KeyHistory:
        return KeyHistory.from_rows(self._rows)


class IamProjection(Projection):
    """Projection of one institution's IAM topic (see the module docstring)."""

    def __init__(
        self, institution: str, *, signers: SignerPolicy, prefix: str = DEFAULT_PREFIX
    ) -> None:
        self.institution = institution
        self.topic = iam_topic(institution).name(prefix)
        self.name = projection_name(institution)
        self.signers = signers
        self.rejected: Counter[str] = Counter()
        self.waiting_for = 0  # certified height a waiting event needs (0: not waiting)
        # every series exists from the start (at 0), so an alert on it can fire
        WAITING.labels(institution).set(0)
        for reason in Refusal:
            REJECTED.labels(institution, str(reason))
        self._reported = -1  # highest offset whose refusal was logged and counted

    def topics(self) -> list[str]:
        return [self.topic]

    def migrate(self, conn: psycopg.Connection[Any]) -> list[str]:
        """Create or upgrade the IAM tables (the projector calls it before running)."""
        return migrate(conn)

    def _refuse(self, msg: Message, reason: str, key: bytes = b"") -> None:
        offset = msg.offset() or 0
        if offset <= self._reported:  # a batch retried after a rollback: said once already
            return
        self._reported = offset
        self.rejected[reason] += 1
        REJECTED.labels(self.institution, reason).inc()
        log.info(
            "IAM event refused",
            extra={
                "institution": self.institution,
                "offset": offset,
                "reason": reason,
                "key_id": key.hex(),
            },
        )

    def apply(self, cur: psycopg.Cursor[Any], batch: Sequence[Message]) -> int | None:
        """Verify and apply ``batch`` in order; stops (returns the count applied) at the first
        event whose key height the certified chain has not reached yet."""
        opened: list[Opened | Refusal] = []
        for msg in batch:
            value = msg.value()
            raw = value if isinstance(value, bytes) else b""
            opened.append(open_message(raw, self.institution))
        candidates = [o for o in opened if isinstance(o, Opened)]
        if not candidates:
            for msg, bad in zip(batch, opened, strict=True):
                self._refuse(msg, str(bad))
            return None
        height = self.signers.chain_height(cur)
        history = (
            self.signers.history(cur, sorted({o.key_id for o in candidates}))
            if height >= 0
            else KeyHistory()
        )
        mark_row = cur.execute("SELECT coalesce(max(key_height), 0) FROM iam_events").fetchone()
        mark = int(mark_row[0]) if mark_row else 0
        cur.execute(
            "SELECT event_id FROM iam_events WHERE event_id = ANY(%s)",
            ([o.event_id for o in candidates],),
        )
        seen = {str(r[0]) for r in cur.fetchall()}
        authz = load_authz(cur)
        accepted: list[tuple[str, int, bytes, int]] = []
        for index, (msg, item) in enumerate(zip(batch, opened, strict=True)):
            if isinstance(item, Refusal):
                self._refuse(msg, str(item))
                continue
            needed = needed_height(item, mark)
            if needed > height:
                self._write_accepted(cur, accepted)
                if self.waiting_for != needed:
                    log.info(
                        "IAM event waits for the chain",
                        extra={
                            "institution": self.institution,
                            "offset": msg.offset(),
                            "key_height": needed,
                            "chain_height": height,
                        },
                    )
                self.waiting_for = needed
                WAITING.labels(self.institution).set(needed)
                return index
            refusal = decide(item, self.institution, history.at, mark, seen.__contains__)
            handler = HANDLERS.get(item.schema)
            if refusal is None and handler is None:
                refusal = Refusal.BAD_EVENT
            if refusal is not None:
                self._refuse(msg, str(refusal), item.key_id)
                continue
            why = authorize(authz, item.schema, item.record)
            if why is not None:
                self._refuse(msg, str(Refusal.UNAUTHORIZED), item.key_id)
                log.warning(
                    "IAM event of an unauthorized actor refused",
                    extra={
                        "institution": self.institution,
                        "offset": msg.offset(),
                        "event_id": item.event_id,
                        "event": item.schema,
                        "actor": item.record.get("actor", ""),
                        "why": why,
                    },
                )
                continue
            assert handler is not None
            handler(cur, item.record)
            authz.apply(item.schema, item.record)
            seen.add(item.event_id)
            mark = max(mark, item.key_height)
            accepted.append((item.event_id, msg.offset() or 0, item.key_id, item.key_height))
        self._write_accepted(cur, accepted)
        if self.waiting_for:
            self.waiting_for = 0
            WAITING.labels(self.institution).set(0)
        return None

    @staticmethod
    def _write_accepted(cur: psycopg.Cursor[Any], rows: list[tuple[str, int, bytes, int]]) -> None:
        if rows:
            cur.executemany(
                'INSERT INTO iam_events (event_id, "offset", key_id, key_height) '
                "VALUES (%s, %s, %s, %s)",
                rows,
            )


def reset(conn: psycopg.Connection[Any], institution: str) -> None:
    """Empty the projection tables and positions: the next runner rebuilds from offset 0."""
    with conn.transaction():
        conn.execute(f"TRUNCATE {', '.join(PROJECTION_TABLES)}")
        conn.execute(
            "DELETE FROM projection_positions WHERE projection = %s",
            (projection_name(institution),),
        )
