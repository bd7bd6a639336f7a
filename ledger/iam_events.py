"""Signed IAM events: who may write an institution's IAM topic, and how a reader decides (D21).

Theory of operation
-------------------
* Every message on ``<prefix>iam.<institution>`` is a ``SignedIamEvent``: a body
  (``institution_id``, ``key_height``, ``key_id``, ``event`` = the single-object-encoded IAM
  event) and an Ed25519 signature over ``IAM_DOMAIN || canonical body`` (:func:`sign_event`).
* The writer must be a key that the certified chain says is an active ``SERVICE`` key of
  that institution after final height ``key_height`` (:class:`KeyHistory`, built from the
  rows :func:`key_activity` derives from each block's write set; the projector stores them
  in ``chain.key_activity``, the audit rebuilds them from its own replay).
* :func:`decide` is the whole rule, pure and deterministic, so the live projection, a
  rebuild and the audit agree on every message. In topic order, an event is accepted iff it
  decodes as a signed IAM event of this institution (outer body and inner event), its
  ``event_id`` was not accepted before (replays), its key is an active SERVICE key of the
  institution at ``key_height`` with a valid signature, and the key is still active at the
  topic's *mark* (the highest ``key_height`` accepted so far): once the institution has
  written with a height past a key's revocation, that key can no longer backdate events.
  A signed event is then applied only if its ``actor`` was allowed to act
  (:func:`ledger.iam_authz.authorize`, :data:`Refusal.UNAUTHORIZED` otherwise): the
  signature says the gateway wrote it, the authorization says it was entitled to.
* A reader must wait (never skip) while its certified chain is below
  ``max(key_height, mark)``: :func:`needed_height` says how far.
* With the chain's header stamps (:class:`ledger.iam_time.ChainClock`), :func:`decide_appended`
  adds the broker's append time (D56): a message not stamped by the broker is refused
  (``create_time``), a ``key_height`` beyond ``h(appended + S)`` is refused (``future``)
  before anything else is looked at, and a key inactive at ``h(appended - S)`` is refused
  (``stale_key``); until the chain has a block stamped after the time in question the
  answer is :class:`ledger.iam_time.Wait`. Every reader passes the same ``S``
  (:data:`ledger.iam_time.SKEW_MS`, read when it decides).
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger import iam_time
from ledger.errors import DecodeError
from ledger.hashing import canonical_bytes
from ledger.iam_authz import AuthzState, authorize
from ledger.iam_time import ChainClock, Wait, check_future, check_stale
from ledger.keys import KeyPair, verify
from ledger.state import Record, WriteSet
from schemas.codec import decode, encode
from schemas.errors import CodecError

IAM_DOMAIN = b"pantheon/iam-event/v1\x00"
SIGNED_SCHEMA = "pantheon.SignedIamEvent"
BODY_SCHEMA = "pantheon.SignedIamEventBody"
SERVICE_ROLE = "SERVICE"
#: Columns of ``chain.key_activity`` (one row per key and height where it changed).
KEY_ACTIVITY_COLUMNS = ("key_id", "height", "institution_id", "role", "active", "public_key")


class Refusal(enum.StrEnum):
    """Why a message on an IAM topic was refused (the metric's ``reason`` label)."""

    UNDECODABLE = "undecodable"  # not a known single-object message
    UNSIGNED = "unsigned"  # a bare IAM event (the old format) or another schema
    WRONG_INSTITUTION = "wrong_institution"  # body or inner event of another institution
    BAD_EVENT = "bad_event"  # the inner bytes are not a decodable event with an event_id
    REPLAYED = "replayed"  # an event_id already accepted on this topic
    UNKNOWN_KEY = "unknown_key"  # not a key on chain at key_height
    FOREIGN_KEY = "foreign_key"  # a key of another institution
    NOT_SERVICE = "not_service"  # an operator, governance, user or device key
    REVOKED_KEY = "revoked_key"  # inactive at key_height
    BAD_SIGNATURE = "bad_signature"
    STALE_KEY = "stale_key"  # revoked by the mark or by append time - S: backdated (D56)
    FUTURE = "future"  # key_height beyond the chain at append time + S (D56)
    CREATE_TIME = "create_time"  # not stamped by the broker at append (D56)
    UNAUTHORIZED = "unauthorized"  # its actor could not have done it (ledger.iam_authz)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as the chain describes it after some height."""

    institution_id: str
    role: str
    active: bool
    public_key: bytes


@dataclass(slots=True)
class KeyHistory:
    """Each key's states by height (from ``key_activity`` rows): what the chain said when."""

    _heights: dict[bytes, list[int]] = field(default_factory=dict)
    _infos: dict[bytes, list[KeyInfo]] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]]) -> KeyHistory:
        """From rows in :data:`KEY_ACTIVITY_COLUMNS` order (any order of rows)."""
        history = cls()
        for row in sorted(rows, key=lambda r: (bytes(r[0]), int(r[1]))):
            history.add(row)
        return history

    def add(self, row: Sequence[Any]) -> None:
        """One row; rows of a key must come in increasing height."""
        kid, height, institution, role, active, public_key = row
        kid = bytes(kid)
        heights = self._heights.setdefault(kid, [])
        if heights and heights[-1] >= int(height):
            raise DecodeError(f"key activity of {kid.hex()} out of order at {height}")
        heights.append(int(height))
        info = KeyInfo(str(institution), str(role), bool(active), bytes(public_key))
        self._infos.setdefault(kid, []).append(info)

    def at(self, kid: bytes, height: int) -> KeyInfo | None:
        """The key after final height ``height`` (None: not registered yet)."""
        heights = self._heights.get(kid)
        if not heights:
            return None
        index = bisect.bisect_right(heights, height) - 1
        return self._infos[kid][index] if index >= 0 else None


def key_activity(
    writes: WriteSet, height: int, previous: Callable[[str], Record | None]
) -> list[tuple[Any, ...]]:
    """Rows of ``chain.key_activity`` for one block: every ``key/`` record that is new or
    whose institution, role, public key or activity changed (nonce moves are not rows)."""
    rows: list[tuple[Any, ...]] = []
    for key, record in writes.entries:
        if not key.startswith("key/") or record is None:
            continue
        before = previous(key)
        fields = ("institution_id", "role", "active", "public_key")
        if before is not None and all(before[f] == record[f] for f in fields):
            continue
        rows.append(
            (
                record["key_id"],
                height,
                record["institution_id"],
                record["role"],
                record["active"],
                record["public_key"],
            )
        )
    return rows


def signing_bytes(body: Mapping[str, Any]) -> bytes:
    """What the IAM key signs (after :data:`IAM_DOMAIN`): the canonical body."""
    return canonical_bytes(BODY_SCHEMA, body)


def sign_event(key: KeyPair, institution: str, key_height: int, event: bytes) -> bytes:
    """The ``SignedIamEvent`` message carrying ``event`` (single-object bytes)."""
    body = {
        "institution_id": institution,
        "key_height": key_height,
        "key_id": key.key_id,
        "event": event,
    }
    signature = key.sign(IAM_DOMAIN, signing_bytes(body))
    return encode(SIGNED_SCHEMA, {"body": body, "signature": signature})


@dataclass(frozen=True, slots=True)
class Opened:
    """A signed IAM message that decoded and names the right institution (not yet trusted)."""

    body: Mapping[str, Any]
    signature: bytes
    schema: str  # the inner event's full schema name
    record: dict[str, Any]  # the inner event

    @property
    def key_id(self) -> bytes:
        return bytes(self.body["key_id"])

    @property
    def key_height(self) -> int:
        return int(self.body["key_height"])

    @property
    def event_id(self) -> str:
        return str(self.record["event_id"])


def open_message(raw: bytes, institution: str) -> Opened | Refusal:
    """Decode a message of ``institution``'s IAM topic (structure only, no trust)."""
    try:
        schema, outer = decode(raw)
    except CodecError:
        return Refusal.UNDECODABLE
    if schema != SIGNED_SCHEMA:
        return Refusal.UNSIGNED
    body = outer["body"]
    if body["institution_id"] != institution or body["key_height"] < 0:
        return Refusal.WRONG_INSTITUTION
    try:
        inner_schema, record = decode(body["event"])
    except CodecError:
        return Refusal.BAD_EVENT
    if inner_schema == SIGNED_SCHEMA or not isinstance(record.get("event_id"), str):
        return Refusal.BAD_EVENT
    if record.get("institution_id") != institution:
        return Refusal.WRONG_INSTITUTION
    return Opened(body, bytes(outer["signature"]), inner_schema, record)


def needed_height(opened: Opened, mark: int) -> int:
    """The certified height a reader must have projected before deciding ``opened``."""
    return max(opened.key_height, mark)


KeyLookup = Callable[[bytes, int], KeyInfo | None]


def check_signer(opened: Opened, institution: str, keys: KeyLookup, mark: int) -> Refusal | None:
    """Whether the key of ``opened`` may write ``institution``'s IAM topic (None: it may)."""
    info = keys(opened.key_id, opened.key_height)
    if info is None:
        return Refusal.UNKNOWN_KEY
    if info.institution_id != institution:
        return Refusal.FOREIGN_KEY
    if info.role != SERVICE_ROLE:
        return Refusal.NOT_SERVICE
    if not info.active:
        return Refusal.REVOKED_KEY
    if not verify(info.public_key, opened.signature, IAM_DOMAIN, signing_bytes(opened.body)):
        return Refusal.BAD_SIGNATURE
    if mark > opened.key_height:
        later = keys(opened.key_id, mark)
        if later is None or not later.active or later.public_key != info.public_key:
            return Refusal.STALE_KEY
    return None


def decide(
    opened: Opened,
    institution: str,
    keys: KeyLookup,
    mark: int,
    seen: Callable[[str], bool],
) -> Refusal | None:
    """The whole rule for one opened message (None: apply it). The caller has projected the
    chain to :func:`needed_height`, and ``seen`` answers for every event accepted before."""
    if seen(opened.event_id):
        return Refusal.REPLAYED
    return check_signer(opened, institution, keys, mark)


def decide_appended(
    opened: Opened,
    *,
    stamp: tuple[int, int],
    institution: str,
    keys: KeyLookup,
    mark: int,
    seen: Callable[[str], bool],
    clock: ChainClock,
    skew_ms: int,
) -> Refusal | Wait | None:
    """:func:`decide` bounded by the broker's ``stamp`` (confluent-kafka's
    ``msg.timestamp()``: type, ms) of the message (None: apply it). ``clock`` and ``keys``
    describe the same certified chain; once this returns None, :func:`needed_height` is
    within it."""
    ts_type, appended = stamp
    future = check_future(
        key_height=opened.key_height,
        ts_type=ts_type,
        appended_ms=appended,
        clock=clock,
        skew_ms=skew_ms,
    )
    if isinstance(future, Wait):
        return future
    if future is not None:
        return Refusal(str(future))
    refusal = decide(opened, institution, keys, mark, seen)
    if refusal is not None:
        return refusal
    signer = keys(opened.key_id, opened.key_height)
    assert signer is not None  # decide refuses unknown keys

    def state(kid: bytes, height: int) -> tuple[bool, bytes] | None:
        info = keys(kid, height)
        return None if info is None else (info.active, info.public_key)

    stale = check_stale(
        key_id=opened.key_id,
        key_height=opened.key_height,
        public_key=signer.public_key,
        appended_ms=appended,
        clock=clock,
        keys=state,
        skew_ms=skew_ms,
    )
    if stale is None or isinstance(stale, Wait):
        return stale
    return Refusal(str(stale))


@dataclass(slots=True)
class IamGate:
    """:func:`decide` and then :func:`ledger.iam_authz.authorize` over a topic in order, with
    their state in memory (audit, bench): the authorization state is folded from the
    accepted events alone. With a ``clock`` (the audit always passes one) the append time
    bounds every event too (:func:`decide_appended`); without one (the bench, unit tests) it
    is not checked."""

    institution: str
    keys: KeyLookup
    clock: ChainClock | None = None
    mark: int = 0
    seen: set[str] = field(default_factory=set)
    authz: AuthzState = field(default_factory=AuthzState)
    #: why the last :data:`Refusal.UNAUTHORIZED` was refused, with its event
    unauthorized: tuple[Opened, str] | None = None

    def admit(self, raw: bytes, stamp: tuple[int, int] = (0, 0)) -> Opened | Refusal | Wait:
        """The opened event if accepted (its id and height are then remembered); ``stamp``
        is the broker's (type, ms), by default "not available" (refused with a clock)."""
        opened = open_message(raw, self.institution)
        if isinstance(opened, Refusal):
            return opened
        seen = self.seen.__contains__
        refusal: Refusal | Wait | None
        if self.clock is None:
            refusal = decide(opened, self.institution, self.keys, self.mark, seen)
        else:
            refusal = decide_appended(
                opened,
                stamp=stamp,
                institution=self.institution,
                keys=self.keys,
                mark=self.mark,
                seen=seen,
                clock=self.clock,
                skew_ms=iam_time.SKEW_MS,
            )
        if refusal is not None:
            return refusal
        why = authorize(self.authz, opened.schema, opened.record)
        if why is not None:
            self.unauthorized = (opened, why)
            return Refusal.UNAUTHORIZED
        self.authz.apply(opened.schema, opened.record)
        self.seen.add(opened.event_id)
        self.mark = max(self.mark, opened.key_height)
        return opened
