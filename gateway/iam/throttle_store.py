"""Login throttling whose counters live in PostgreSQL, shared by every gateway process.

Theory of operation
-------------------
The rules are :class:`gateway.auth.throttle.LoginThrottle`'s, unchanged; only the state moves.
Each ``check``, ``failure`` or ``success`` is one transaction that

1. takes a transaction-scoped advisory lock (one per institution database: logins are rare
   and each already costs a scrypt hash, so serializing their few-statement bookkeeping is
   cheap, and no two workers can lose each other's failure counts);
2. reads the counters the attempt may touch (:meth:`LoginThrottle.keys_of`) and whether the
   login succeeded from the source before, into a fresh in-memory ``LoginThrottle``;
3. applies the rule and writes those counters back (upsert, or delete when the rule dropped
   one).

Counters idle for ``forget_after_s`` that no longer block, and known sources older than
``known_source_ttl_s``, are deleted by the attempt that finds the last sweep a minute old.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from psycopg_pool import ConnectionPool

from gateway.auth.throttle import Counter, Key, LoginThrottle, ThrottlePolicy

#: pg_advisory_xact_lock key of the throttle's bookkeeping
LOCK_KEY = 0x7468726F74746C65  # "throttle"
SWEEP_EVERY_S = 60.0


def _text(key: Key) -> str:
    return json.dumps(list(key), separators=(",", ":"))


class SharedLoginThrottle:
    """:class:`LoginThrottle` over the ``iam_login_throttle`` and ``iam_login_sources`` tables
    (IAM migration 005; the IAM service applies it)."""

    def __init__(self, pool: ConnectionPool[Any], policy: ThrottlePolicy | None = None) -> None:
        self.policy = policy or ThrottlePolicy()
        self._pool = pool
        self._swept = time.monotonic()

    def check(self, login: str, source: str, now: float, device: str | None = None) -> None:
        """:meth:`LoginThrottle.check` (raises ``Throttled``)."""
        self._apply(login, source, device, lambda t: t.check(login, source, now, device), now)

    def failure(self, login: str, source: str, now: float, device: str | None = None) -> None:
        """:meth:`LoginThrottle.failure`."""
        self._apply(login, source, device, lambda t: t.failure(login, source, now, device), now)

    def success(self, login: str, source: str, now: float, device: str | None = None) -> None:
        """:meth:`LoginThrottle.success`."""
        self._apply(login, source, device, lambda t: t.success(login, source, now, device), now)

    def _apply(
        self,
        login: str,
        source: str,
        device: str | None,
        rule: Callable[[LoginThrottle], None],
        now: float,
    ) -> None:
        keys = LoginThrottle.keys_of(login, source, device)
        texts = {_text(k): k for k in keys}
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            rows = conn.execute(
                "SELECT key, failures, blocked_until, last_seen FROM iam_login_throttle "
                "WHERE key = ANY(%s)",
                (list(texts),),
            ).fetchall()
            seen = conn.execute(
                "SELECT last_success FROM iam_login_sources WHERE login = %s AND source = %s",
                (login, source),
            ).fetchone()
            throttle = LoginThrottle(self.policy)
            counters: dict[Key, Counter] = {texts[r[0]]: (r[1], r[2], r[3]) for r in rows}
            throttle.load(counters, {} if seen is None else {(login, source): seen[0]})
            rule(throttle)  # a refusal (Throttled) rolls back: a check changes nothing
            after, known = throttle.counters()
            self._write(
                conn,
                texts=texts,
                after=after,
                known=known.get((login, source)),
                login=login,
                source=source,
            )
            self._sweep(conn, now)

    @staticmethod
    def _write(
        conn: Any,
        *,
        texts: dict[str, Key],
        after: dict[Key, Counter],
        known: float | None,
        login: str,
        source: str,
    ) -> None:
        gone = [text for text, key in texts.items() if key not in after]
        if gone:
            conn.execute("DELETE FROM iam_login_throttle WHERE key = ANY(%s)", (gone,))
        for text, key in texts.items():
            if key in after:
                conn.execute(
                    "INSERT INTO iam_login_throttle (key, failures, blocked_until, last_seen) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET "
                    "failures = EXCLUDED.failures, blocked_until = EXCLUDED.blocked_until, "
                    "last_seen = EXCLUDED.last_seen",
                    (text, *after[key]),
                )
        if known is not None:
            conn.execute(
                "INSERT INTO iam_login_sources (login, source, last_success) VALUES (%s, %s, %s) "
                "ON CONFLICT (login, source) DO UPDATE SET last_success = EXCLUDED.last_success",
                (login, source, known),
            )

    def _sweep(self, conn: Any, now: float) -> None:
        if time.monotonic() - self._swept < SWEEP_EVERY_S:
            return
        self._swept = time.monotonic()
        conn.execute(
            "DELETE FROM iam_login_throttle WHERE last_seen < %s AND blocked_until <= %s",
            (now - self.policy.forget_after_s, now),
        )
        conn.execute(
            "DELETE FROM iam_login_sources WHERE last_success < %s",
            (now - self.policy.known_source_ttl_s,),
        )
