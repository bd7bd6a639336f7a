"""The institution's IAM state, folded in memory from its signed topic: what the gateway believes.

Theory of operation
-------------------
* PostgreSQL is not a trusted party (docs/security.md). Whoever can write ``iam_grants``,
  ``iam_memberships`` or ``iam_users`` must not thereby log in, gain a permission, undo a
  revocation, or make this gateway sign an escalation. So every decision the gateway takes
  about a principal (a token's current access, a login, a command) reads this view, never
  those tables; they stay what the GraphQL reads and the audit compare.
* A thread reads ``<prefix>iam.<institution>`` from its first offset (assigned, no group
  offsets), decides every message with the IAM projection's own rule
  (:func:`projections.iam_rules.judge`: the signer on the certified chain, the broker's
  append time, replays, the actor's authority), and folds what it accepts (:class:`Fold`):
  the :class:`~ledger.iam_authz.AuthzState` the rule needs, who each principal is, the
  token revocations, and the sealed password and credential hashes of the latest events (so
  an older row written back does not bring an old password back either). After each batch
  it publishes an immutable :class:`~gateway.iam.state.IamState` with the semantics of
  :func:`~gateway.iam.state.evolve` (a unit test holds it to that).
* What the rule needs of the chain comes from the signer policy; in production
  :class:`~projections.iam_certified.CertifiedSigners` (D75): the chain projection's tables,
  believed only for blocks whose quorum certificate it verified from the genesis, and key
  activations only where a certified entry registered that key (what remains trusted in
  the database: its deactivation rows, docs/security.md).
* An event the chain cannot decide yet waits, as it does in the projection; messages behind
  it are not applied, and while it waits the view reads at most a batch further.
  :meth:`IamView.wait_ready` waits until the view has *decided* every message the topic held
  when it started (a view behind the topic would miss revocations, so until then every
  decision fails closed: :class:`IamViewUnavailable`, and ``AccessUnknown`` for a token);
  :meth:`IamView.wait_for` waits until it has decided an offset (read-your-writes of the
  IAM service). Revoked token ids are kept for the process's life (never pruned by the
  local clock, which may step).
* The view's reads of the chain tables run under a statement timeout, so a lock held on
  them makes the view retry (logged) instead of hanging. A view that falls behind once it
  has caught up is not detected: it serves the state it has, as the projection does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from psycopg_pool import ConnectionPool

from gateway.auth.tokens import Access, Claims
from gateway.iam.errors import IamError
from gateway.iam.state import IamState, Principal, PrincipalKind
from ledger.iam_authz import AuthzState
from ledger.iam_events import Opened, open_message
from projections.iam_rules import Held, Refused, judge, read_chain
from projections.iam_signers import SignerPolicy
from runtime.kafka_config import consume_ready, consumer_config

log = logging.getLogger("pantheon.iam.view")
BATCH = 500
#: The longest the view waits for one statement of the chain tables (then retries, logged).
STATEMENT_TIMEOUT_MS = 10_000
#: How long a token check waits for a view that has not caught up (then AccessUnknown).
ACCESS_WAIT_S = 2.0


class IamViewUnavailable(IamError):
    """The gateway has not read its institution's IAM topic yet (try again shortly)."""

    code = "iam_unavailable"


@dataclass(slots=True)
class Secrets:
    """The sealed hashes of the latest events, by principal (None once forgotten)."""

    password: dict[str, str | None] = field(default_factory=dict)
    credential: dict[str, str] = field(default_factory=dict)
    profile: dict[str, bytes | None] = field(default_factory=dict)  # sealed personal fields


@dataclass(slots=True)
class Fold:
    """Everything the view has accepted (mutated by the view's thread only). Events fold
    into mutable maps in constant time each; :meth:`publish` then makes the immutable
    :attr:`state` readers see (once per batch, so reading a long topic stays linear)."""

    institution: str
    state: IamState
    authz: AuthzState = field(default_factory=AuthzState)
    #: principal id -> (kind, login), for every registration the fold accepted
    identity: dict[str, tuple[PrincipalKind, str]] = field(default_factory=dict)
    revoked: dict[str, int] = field(default_factory=dict)  # jti -> expires_at_ms
    not_before_ms: dict[str, int] = field(default_factory=dict)
    secrets: Secrets = field(default_factory=Secrets)
    seen: set[str] = field(default_factory=set)
    mark: int = 0

    def apply(self, item: Opened) -> None:
        """Fold one accepted event (the semantics of :func:`gateway.iam.state.evolve`)."""
        schema, record = item.schema, item.record
        name = schema.rsplit(".", 1)[-1]
        self.authz.apply(schema, record)
        if name in ("UserRegistered", "ServiceAccountCreated"):
            self._registered(name, record)
        elif name == "TokenRevoked":
            user, at = str(record["user_id"]), int(record["at_ms"])
            if record["jti"]:
                self.revoked[str(record["jti"])] = int(record["expires_at_ms"])
            else:
                self.not_before_ms[user] = max(self.not_before_ms.get(user, 0), at)
        elif name == "UserPasswordChanged":
            user = str(record["user_id"])
            if self._kind(user) == "user" and not self.authz.principals[user].forgotten:
                self.secrets.password[user] = str(record["password_hash"])
        elif name == "UserProfileUpdated":
            user = str(record["user_id"])
            if user in self.identity and not self.authz.principals[user].forgotten:
                self.secrets.profile[user] = bytes(record["encrypted_profile"])
        elif name == "UserForgotten":
            self.secrets.password[str(record["user_id"])] = None
            self.secrets.profile[str(record["user_id"])] = None
        self.seen.add(item.event_id)
        self.mark = max(self.mark, item.key_height)

    def _registered(self, name: str, record: Mapping[str, Any]) -> None:
        user = name == "UserRegistered"
        pid = str(record["user_id"] if user else record["account_id"])
        if pid in self.identity or pid not in self.authz.principals:
            return  # a second registration of the id or of the login: ignored
        self.identity[pid] = (
            ("user", str(record["login"]))
            if user
            else (
                "service",
                str(record["name"]),
            )
        )
        if user:
            self.secrets.password[pid] = str(record["password_hash"])
            self.secrets.profile[pid] = bytes(record["encrypted_profile"])
        else:
            self.secrets.credential[pid] = str(record["credential_hash"])

    def _kind(self, pid: str) -> PrincipalKind | None:
        found = self.identity.get(pid)
        return None if found is None else found[0]

    def publish(self) -> None:
        """Make :attr:`state` the immutable state of everything folded so far."""
        authz = self.authz
        principals = {
            pid: Principal(
                id=pid,
                kind=kind,
                login=login,
                owner=authz.principals[pid].owner,
                disabled=authz.principals[pid].disabled,
                forgotten=authz.principals[pid].forgotten,
            )
            for pid, (kind, login) in self.identity.items()
        }
        self.state = IamState(
            institution=self.institution,
            principals=principals,
            logins={p.login: pid for pid, p in principals.items()},
            groups=frozenset(authz.groups),
            members={pid: frozenset(g) for pid, g in authz.members.items()},
            grants={s: frozenset(p) for s, p in authz.grants.items()},
        )

    def access(self, claims: Claims) -> Access | None:
        """The token principal's current access; None if the principal is unknown, disabled
        or forgotten, or the token was revoked."""
        principal = self.state.principal(claims.sub)
        if principal is None or not principal.active or claims.jti in self.revoked:
            return None
        if self.not_before_ms.get(claims.sub, 0) > claims.iat * 1000:
            return None
        return self.access_of(claims.sub)

    def access_of(self, principal_id: str) -> Access:
        """A principal's groups and (direct and inherited) permissions, as names."""
        return Access(
            groups=self.state.groups_of(principal_id),
            perms=frozenset(p.value for p in self.state.permissions_of(principal_id)),
        )


class IamView:
    """One institution's IAM state from its signed topic (see the module docstring)."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        institution: str,
        pool: ConnectionPool[Any],
        signers: SignerPolicy,
    ) -> None:
        self.topic, self.institution = topic, institution
        self._pool, self._signers = pool, signers
        self._fold = Fold(institution, IamState(institution=institution))
        self._consumer = Consumer(
            consumer_config(bootstrap, f"projection-iam-view.{institution}")  # ACL: projection-*
        )
        self._pending: list[Message] = []
        self._next = 0  # first offset not decided yet
        self._read = 0  # first offset not read yet
        self._ever_ready = False  # once caught up, later holds are the projection's too
        self._start_end: int | None = None  # the topic's end when the view started
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self.waiting_for = 0  # certified height the next event waits for (0: none)
        self._thread = threading.Thread(target=self._run, name="iam-view", daemon=True)
        self._thread.start()

    # -- what the gateway asks ------------------------------------------------------------
    @property
    def state(self) -> IamState:
        """The IAM state of every event decided so far (an immutable snapshot)."""
        return self._fold.state

    def access(self, claims: Claims) -> Access | None:
        """The token principal's current groups and permissions; None if the principal is
        unknown, disabled or forgotten, or the token was revoked."""
        self.wait_ready(ACCESS_WAIT_S)
        return self._fold.access(claims)

    def access_of(self, principal_id: str) -> Access:
        """A principal's groups and (direct and inherited) permissions, as names."""
        return self._fold.access_of(principal_id)

    def not_before_ms(self, principal_id: str) -> int:
        """When the principal's last revoke-all took effect (0: never)."""
        return self._fold.not_before_ms.get(principal_id, 0)

    def password_hash(self, login: str) -> tuple[str, str] | None:
        """``(user id, sealed password hash)`` of an active user's login, else None."""
        self.wait_ready()
        state = self._fold.state
        user = state.logins.get(login)
        principal = state.principal(user) if user is not None else None
        if principal is None or principal.kind != "user" or not principal.active:
            return None
        sealed = self._fold.secrets.password.get(principal.id)
        return None if sealed is None else (principal.id, sealed)

    def sealed_password(self, user_id: str) -> str | None:
        """The sealed password hash of the user's latest event (None: no such user, or
        forgotten)."""
        self.wait_ready()
        return self._fold.secrets.password.get(user_id)

    def sealed_profile(self, principal_id: str) -> tuple[bool, bytes | None]:
        """``(known, sealed personal fields)`` of a principal from its latest event (None:
        none, or forgotten)."""
        self.wait_ready()
        if self._fold.state.principal(principal_id) is None:
            return False, None
        return True, self._fold.secrets.profile.get(principal_id)

    def credential_hash(self, account_id: str) -> str | None:
        """The sealed credential hash of an active service account, else None."""
        self.wait_ready()
        principal = self._fold.state.principal(account_id)
        if principal is None or principal.kind != "service" or not principal.active:
            return None
        return self._fold.secrets.credential.get(account_id)

    def applied(self, event_ids: Iterable[str]) -> set[str]:
        """Those of ``event_ids`` the view accepted."""
        return {e for e in event_ids if e in self._fold.seen}

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Return once every message the topic held at start was decided (applied or
        refused; once caught up, the view stays ready); :class:`IamViewUnavailable` after
        ``timeout``."""
        with self._changed:
            if not self._changed.wait_for(self._ready, timeout):
                raise IamViewUnavailable(
                    f"the IAM topic {self.topic} was not read within {timeout:.0f} s"
                )

    def wait_for(self, offset: int, timeout: float) -> bool:
        """Whether the view decided ``offset`` (applied or refused it) within ``timeout``."""
        with self._changed:
            return self._changed.wait_for(lambda: self._next > offset, timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    # -- the thread -----------------------------------------------------------------------
    def _ready(self) -> bool:
        if self._ever_ready:
            return True
        self._ever_ready = self._start_end is not None and self._next >= self._start_end
        return self._ever_ready

    def _run(self) -> None:
        pause = 0.0  # after a failure: grows to 5 s while it lasts, logged once
        try:
            while not self._stop.is_set():
                try:
                    if self._start_end is None:
                        self._start()
                    self._step()
                    pause = 0.0
                except Exception:  # the database or the broker away (a new topic's leader)
                    if pause == 0.0:
                        log.warning("IAM view waits", exc_info=True, extra={"topic": self.topic})
                    pause = min(5.0, max(0.25, pause * 2))
                    self._stop.wait(pause)
        finally:
            self._consumer.close()

    def _start(self) -> None:
        """Note the topic's end now (what :meth:`wait_ready` waits for) and read from 0."""
        _, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, 0), 2)
        self._consumer.assign([TopicPartition(self.topic, 0, 0)])
        self._start_end = max(0, int(high))

    def _step(self) -> None:
        # while an event is held, read no further than a batch: a flood behind it stays in
        # the broker, not in this process's memory
        room = BATCH - len(self._pending)
        fresh = consume_ready(self._consumer, room, 0.2) if room > 0 else []
        for msg in fresh:
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error", extra={"error": str(error)})
                continue
            offset = msg.offset() or 0
            if offset >= self._read:
                self._pending.append(msg)
                self._read = offset + 1
        if self._pending:
            decided = self._decide(self._pending)
            self._pending = self._pending[decided:]
            if decided:
                self._next = (self._pending[0].offset() or 0) if self._pending else self._read
        else:  # nothing waits: the consumer's position passes control records too
            position = self._consumer.position([TopicPartition(self.topic, 0)])[0].offset
            self._read = max(self._read, position)
            self._next = self._read
        with self._changed:
            self._changed.notify_all()
        if self._pending and not fresh:
            self._stop.wait(0.1)  # waiting for the chain: ask again shortly

    def _decide(self, batch: Sequence[Message]) -> int:
        """Fold the decidable prefix of ``batch``; how many messages it decided."""
        opened = [open_message(_raw(m), self.institution) for m in batch]
        candidates = [o for o in opened if isinstance(o, Opened)]
        if not candidates:
            return len(batch)
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            # a lock held on the chain tables must not freeze the view silently
            cur.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
            chain = read_chain(self._signers, cur, [o.key_id for o in candidates])
        fold = self._fold
        for index, (msg, item) in enumerate(zip(batch, opened, strict=True)):
            if not isinstance(item, Opened):
                continue
            verdict = judge(
                item,
                stamp=msg.timestamp(),
                institution=self.institution,
                chain=chain,
                mark=fold.mark,
                seen=fold.seen.__contains__,
                authz=fold.authz,
            )
            if isinstance(verdict, Held):
                fold.publish()
                self.waiting_for = verdict.needed
                return index
            if isinstance(verdict, Refused):
                continue  # the projection logs and counts refusals
            fold.apply(item)
        fold.publish()
        self.waiting_for = 0
        return len(batch)


def _raw(msg: Message) -> bytes:
    value = msg.value()
    return value if isinstance(value, bytes) else b""
