"""The broker's append time bounds an IAM event's ``key_height`` and its key's age (D56).

Theory of operation
-------------------
* IAM topics carry ``message.timestamp.type=LogAppendTime`` (:mod:`runtime.topics`): the
  broker stamps each message when it appends it, and a client writing the topic cannot
  choose that stamp. A message stamped any other way is refused (:data:`CREATE_TIME`).
* The certified chain is a clock: :class:`ChainClock` holds each final block's header
  ``timestamp_ms`` (under the quorum's signatures). ``h(T)`` is the last height whose
  header, and every header before it, is at most ``T`` (the running maximum, so a block
  with an earlier stamp after a later one cannot move ``h`` back). ``h(T)`` is *final* once
  the chain holds a block stamped after ``T``: no later block can change it.
* For an event appended at ``a`` with skew allowance ``S`` (:data:`SKEW_MS`, the same
  constant for the live projection, a rebuild and the audit):
  ``key_height > h(a + S)`` is refused as ``future``; a key no longer active at
  ``h(a - S)`` (when that is past ``key_height``) is refused as ``stale_key``.
* Until the answer is final the reader waits (:class:`Wait`), exactly as it waits for
  ``key_height``: for ``h(a - S)`` always, for ``h(a + S)`` only while ``key_height`` is
  not yet known to be at most it; so a far-future ``key_height`` holds a reader only until
  the chain has a block stamped after ``a + S``. The result is a pure function of the
  message (with its broker stamp) and the certified chain, so every reader decides alike.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Callable
from dataclasses import dataclass, field

#: How far the broker's clock and the quorum's header stamps may disagree (5 minutes). Every
#: reader (live projection, rebuild, audit) reads it when it decides, never copies it, so
#: they always agree; production never changes it, tests lower it for the whole process.
SKEW_MS = 300_000
#: The genesis (height 0) has no header: it counts as stamped before any message.
GENESIS_MS = 0
#: ``confluent_kafka.TIMESTAMP_LOG_APPEND_TIME`` (the pure core does not import Kafka).
LOG_APPEND_TIME = 2


class TimeRefusal(enum.StrEnum):
    """Why the append time refuses an IAM message (the metric's ``reason`` label)."""

    CREATE_TIME = "create_time"  # not stamped by the broker at append
    FUTURE = "future"  # key_height beyond the chain at append time plus the skew
    STALE_KEY = "stale_key"  # the key was revoked before append time minus the skew


@dataclass(frozen=True, slots=True)
class Wait:
    """The reader must project the chain past a block stamped after ``after_ms``."""

    after_ms: int


def final_after(latest_ms: int | None, t_ms: int) -> bool:
    """Whether ``h(t_ms)`` is final on a chain whose header stamps' running maximum is
    ``latest_ms`` (None: no block, not even the genesis), i.e. some block is stamped after
    ``t_ms``. The readers' waits (:meth:`ChainClock.final`) and D62's decision to send a
    clock tick (``gateway.iam.clock_tick.tick_due``) both ask this, so a tick is sent exactly
    when the readers would wait."""
    return latest_ms is not None and latest_ms > t_ms


@dataclass(slots=True)
class ChainClock:
    """Header stamps of final blocks, by height from 0, as their running maximum."""

    running_max: list[int] = field(default_factory=list)

    def append(self, height: int, timestamp_ms: int) -> None:
        """Record the next final block (heights must come in order from 0)."""
        if height != len(self.running_max):
            raise ValueError(f"block {height} after {len(self.running_max) - 1}")
        last = self.running_max[-1] if self.running_max else timestamp_ms
        self.running_max.append(max(last, timestamp_ms))

    @property
    def latest_ms(self) -> int | None:
        """The running maximum of all the stamps (None: not even the genesis)."""
        return self.running_max[-1] if self.running_max else None

    def final(self, t_ms: int) -> bool:
        """Whether ``h(t_ms)`` can no longer change (a block is stamped after it)."""
        return final_after(self.latest_ms, t_ms)

    def within(self, height: int, t_ms: int) -> bool:
        """Whether ``height <= h(t_ms)`` (already certain, whatever blocks come later)."""
        return 0 <= height < len(self.running_max) and self.running_max[height] <= t_ms

    def height_at(self, t_ms: int) -> int:
        """``h(t_ms)``: the last height stamped at most ``t_ms`` (-1: none)."""
        return bisect.bisect_right(self.running_max, t_ms) - 1


#: ``(key_id, height) -> (active, public_key)`` or None when the key is unknown then.
KeyState = Callable[[bytes, int], tuple[bool, bytes] | None]


def check_future(
    *, key_height: int, ts_type: int, appended_ms: int, clock: ChainClock, skew_ms: int
) -> TimeRefusal | Wait | None:
    """The first half of the rule: the broker stamped the message, and ``key_height`` is at
    most ``h(appended + S)`` (decided before the key is looked at, so a far-future height is
    refused once the chain passes ``appended + S`` instead of being waited for)."""
    if ts_type != LOG_APPEND_TIME:
        return TimeRefusal.CREATE_TIME
    late = appended_ms + skew_ms
    if not clock.within(key_height, late):
        if not clock.final(late):
            return Wait(late)
        return TimeRefusal.FUTURE
    return None


def check_stale(
    *,
    key_id: bytes,
    key_height: int,
    public_key: bytes,
    appended_ms: int,
    clock: ChainClock,
    keys: KeyState,
    skew_ms: int,
) -> TimeRefusal | Wait | None:
    """The second half: the key is still active, with the same public key, at
    ``h(appended - S)`` when that is past ``key_height``."""
    early = appended_ms - skew_ms
    if not clock.final(early):
        return Wait(early)
    since = clock.height_at(early)
    if since > key_height:
        state = keys(key_id, since)
        if state is None or not state[0] or state[1] != public_key:
            return TimeRefusal.STALE_KEY
    return None


def check_time(
    *,
    key_id: bytes,
    key_height: int,
    public_key: bytes,
    ts_type: int,
    appended_ms: int,
    clock: ChainClock,
    keys: KeyState,
    skew_ms: int = SKEW_MS,
) -> TimeRefusal | Wait | None:
    """The append-time rule for one message whose key was valid at ``key_height``."""
    first = check_future(
        key_height=key_height,
        ts_type=ts_type,
        appended_ms=appended_ms,
        clock=clock,
        skew_ms=skew_ms,
    )
    if first is not None:
        return first
    return check_stale(
        key_id=key_id,
        key_height=key_height,
        public_key=public_key,
        appended_ms=appended_ms,
        clock=clock,
        keys=keys,
        skew_ms=skew_ms,
    )
