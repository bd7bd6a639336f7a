"""The IAM projection: one institution's IAM topic into its users, groups, grants tables.

Theory of operation
-------------------
* Reads ``<prefix>iam.<institution>`` with the shared :class:`~projections.runner.ProjectionRunner`
  (rows and position in one transaction). Each event maps to one or two idempotent SQL
  statements (:mod:`projections.iam_handlers`) that mirror :func:`gateway.iam.state.evolve`:
  contradictory events (a second registration of a login, a member of an unknown group) are
  ignored, never fatal, so any replay of the same log yields the same tables.
* Personal fields stay sealed in the tables (``encrypted_profile``, ``password_hash``), as on
  the topic; ``UserForgotten`` sets them to NULL. The wrapped data keys live in
  ``iam_data_keys``, owned by the gateway, so a rebuild after a user was forgotten projects
  that user's personal fields as NULL (and their ciphertexts on the topic stay unreadable).
* :func:`reset` empties the projection tables and its positions (not the gateway-owned key,
  signing-key and setup tables): the next runner rebuilds from offset 0.
* Every message is a signed event (D21, :mod:`ledger.iam_events`): it is applied only if a
  SERVICE key of the institution, active on the certified chain at the event's
  ``key_height`` (and at the topic's mark), signed it, and its ``event_id`` was not applied
  before. The :class:`SignerPolicy` (:mod:`projections.iam_signers`) says where the key history
  comes from:
  :class:`~projections.iam_certified.CertifiedSigners` (the chain tables of the same
  database, believed only with a certificate verified from the genesis, D75) in the
  projector, the rebuild and the gateway; :class:`ChainSigners` (the same tables as
  written) only in tests and a gateway run without ``--genesis``. Anything else
  (unsigned, forged, foreign, revoked, replayed, undecodable) is refused: logged once,
  counted in ``pantheon_iam_rejected_total{reason}``, never applied,
  so one bad record cannot wedge an institution's user management. The broker's append
  time bounds every event (D56, :func:`ledger.iam_events.decide_appended`, with the header
  stamps of the same certified blocks, the signer policy's ``clock``, and
  :data:`ledger.iam_time.SKEW_MS`): a message not stamped by the broker, a ``key_height``
  from the future and a key revoked before the append time are refused. An event the
  projected chain cannot decide yet (its key height, or a block stamped after its append
  time plus or minus S) waits (``apply`` returns the prefix it applied; the runner retries
  the rest; ``pantheon_iam_waiting_height`` and ``pantheon_iam_waiting_after_ms`` say for
  what).
* A signed event is applied only if its ``actor`` was allowed to act
  (:func:`ledger.iam_authz.authorize`) against the state these tables hold, folded forward
  through the batch; otherwise it is refused as ``unauthorized``. The whole rule is
  :func:`projections.iam_rules.judge`, which the gateway's IAM view (D74,
  :mod:`gateway.iam.view`) applies to the same topic with a state folded from the events
  alone, so rows written into these tables make the gateway sign nothing; a rebuild also
  folds from the events alone (empty tables), and the audit reports an escalation a gateway
  was misled into signing.
* ``iam_events`` records every applied event (id, offset, key, key height): replays are
  refused by id, and its highest ``key_height`` is the mark.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Message
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge

from ledger.iam_authz import AuthzState, PrincipalFlags
from ledger.iam_events import Opened, Refusal, open_message
from projections.iam_handlers import HANDLERS
from projections.iam_rules import ChainFacts, Held, Refused, judge, read_chain
from projections.iam_signers import ChainSigners, PinnedSigners, SignerPolicy
from projections.migrate import apply_migrations
from projections.runner import Projection
from runtime.topics import DEFAULT_PREFIX, iam_topic

log = logging.getLogger("pantheon.projections.iam")

# the signer policies are imported from here by their users
__all__ = [
    "PROJECTION_TABLES",
    "ChainSigners",
    "IamProjection",
    "PinnedSigners",
    "SignerPolicy",
    "load_authz",
    "migrate",
    "projection_name",
    "reset",
]

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
WAITING_AFTER = Gauge(
    "pantheon_iam_waiting_after_ms",
    "Broker time (ms) after which a certified block must be stamped before the IAM "
    "projection can decide its next event (D56; 0: not waiting for a time)",
    ["institution"],
)


def projection_name(institution: str) -> str:
    """The runner name (positions key) of an institution's IAM projection."""
    return f"iam.{institution}"


def migrate(conn: psycopg.Connection[Any]) -> list[str]:
    """Create or upgrade the IAM tables (``conn`` outside a transaction)."""
    return apply_migrations(conn, NAMESPACE, MIGRATIONS)


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


@dataclass(slots=True, kw_only=True)
class _Context:
    """What :meth:`IamProjection.apply` decides one batch against."""

    chain: ChainFacts
    mark: int
    seen: set[str]


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
        WAITING_AFTER.labels(institution).set(0)
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
        ctx = self._context(cur, candidates)
        authz, seen, mark = load_authz(cur), ctx.seen, ctx.mark
        accepted: list[tuple[str, int, bytes, int]] = []
        for index, (msg, item) in enumerate(zip(batch, opened, strict=True)):
            if isinstance(item, Refusal):
                self._refuse(msg, str(item))
                continue
            verdict = judge(
                item,
                stamp=msg.timestamp(),
                institution=self.institution,
                chain=ctx.chain,
                mark=mark,
                seen=seen.__contains__,
                authz=authz,
            )
            if isinstance(verdict, Held):
                self._write_accepted(cur, accepted)
                self._wait(msg, verdict.needed, ctx.chain.height, verdict.after_ms)
                return index
            if isinstance(verdict, Refused):
                self._refuse(msg, str(verdict.reason), item.key_id)
                if verdict.why:
                    log.warning(
                        "IAM event of an unauthorized actor refused",
                        extra={
                            "institution": self.institution,
                            "offset": msg.offset(),
                            "event_id": item.event_id,
                            "event": item.schema,
                            "actor": item.record.get("actor", ""),
                            "why": verdict.why,
                        },
                    )
                continue
            HANDLERS[item.schema](cur, item.record)
            authz.apply(item.schema, item.record)
            seen.add(item.event_id)
            mark = max(mark, item.key_height)
            accepted.append((item.event_id, msg.offset() or 0, item.key_id, item.key_height))
        self._write_accepted(cur, accepted)
        if self.waiting_for:
            self.waiting_for = 0
            WAITING.labels(self.institution).set(0)
            WAITING_AFTER.labels(self.institution).set(0)
        return None

    def _wait(self, msg: Message, needed: int, height: int, after_ms: int) -> None:
        """Report that the event of ``msg`` waits for block ``needed`` (or, D56, for a block
        stamped after ``after_ms``)."""
        if self.waiting_for != needed:
            log.info(
                "IAM event waits for the chain",
                extra={
                    "institution": self.institution,
                    "offset": msg.offset(),
                    "key_height": needed,
                    "chain_height": height,
                    "stamped_after_ms": after_ms,
                },
            )
        self.waiting_for = needed
        WAITING.labels(self.institution).set(needed)
        WAITING_AFTER.labels(self.institution).set(after_ms)

    def _context(self, cur: psycopg.Cursor[Any], candidates: Sequence[Opened]) -> _Context:
        """What deciding a batch needs, read once: the certified chain (height, key history,
        header stamps) and the topic's mark and already-applied ids."""
        chain = read_chain(self.signers, cur, [o.key_id for o in candidates])
        mark_row = cur.execute("SELECT coalesce(max(key_height), 0) FROM iam_events").fetchone()
        cur.execute(
            "SELECT event_id FROM iam_events WHERE event_id = ANY(%s)",
            ([o.event_id for o in candidates],),
        )
        seen = {str(r[0]) for r in cur.fetchall()}
        return _Context(chain=chain, mark=int(mark_row[0]) if mark_row else 0, seen=seen)

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
