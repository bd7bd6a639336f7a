"""Login throttling that slows password guessing but cannot lock the owner out.

Theory of operation
-------------------
The scheme follows OWASP's guidance against online guessing (the "device cookie" scheme of the
Authentication and Credential Stuffing cheat sheets): failures are counted per *client* of a
login, so an attacker's failures block the attacker, not the user who logs in from a client
that has logged in successfully before.

* A client of a login is **trusted** when it presents a valid device token of that login (a
  MAC'd value the IAM service hands out at every successful login, see
  :mod:`gateway.iam.service`) or comes from a source address from which that login succeeded
  within ``known_source_ttl_s``; otherwise it is **untrusted**.
* Counters with exponential backoff (the first ``free`` failures cost nothing, then every
  failure doubles the wait ``base_delay_s * 2**(failures - free - 1)``, capped at
  ``max_delay_s``):

  - per **client** -- ``(login, device)`` for a device token, else ``(login, source)`` --
    with ``free_failures``; it applies to every attempt of that client;
  - per **login**, ``free_failures``, counting every failure of the login; it applies only to
    *untrusted* clients. A password guesser who spreads over many addresses is slowed exactly
    as much as by the old per-login lock, while the owner's trusted client never waits for it;
  - per **source address**, ``source_free_failures`` (many users may share one address); it
    applies to every client without a device token (a device token is the way out for a user
    whose address is shared with an attacker).

* :meth:`LoginThrottle.check` raises :class:`Throttled` (with ``retry_after`` seconds) while a
  counter that applies is blocked. :meth:`LoginThrottle.success` clears the client's counter,
  the login's counter too when the client was untrusted (it passed that lock, as before), and
  remembers the source as known for the login. A trusted client's success leaves the login's
  counter alone: an attacker's progress is not reset by the owner logging in.
* Entries idle for ``forget_after_s`` are forgotten; the tables are bounded. The clock is
  passed in. A :class:`LoginThrottle` keeps its state in memory; the gateway keeps it in
  PostgreSQL (:class:`gateway.iam.throttle_store.SharedLoginThrottle`, D46), which runs these
  same rules over the counters of one attempt (:meth:`LoginThrottle.keys_of`,
  :meth:`LoginThrottle.load`, :meth:`LoginThrottle.counters`), so the counts hold across the
  worker processes and replicas of one institution and over restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class ThrottlePolicy:
    """Backoff parameters."""

    free_failures: int = 3
    source_free_failures: int = 20
    base_delay_s: float = 1.0
    max_delay_s: float = 900.0
    forget_after_s: float = 3600.0
    known_source_ttl_s: float = 30 * 86400.0
    max_entries: int = 100_000


class Throttle(Protocol):
    """What a login needs of a throttle (:class:`LoginThrottle` or a shared store of it)."""

    def check(self, login: str, source: str, now: float, device: str | None = None) -> None: ...

    def failure(self, login: str, source: str, now: float, device: str | None = None) -> None: ...

    def success(self, login: str, source: str, now: float, device: str | None = None) -> None: ...


class Throttled(Exception):
    """Too many failed logins: retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed logins; retry in {retry_after:.1f}s")
        self.retry_after = retry_after


@dataclass(slots=True)
class _Entry:
    failures: int
    blocked_until: float
    last_seen: float


Key = tuple[str, ...]
#: a counter's state: (failures, blocked until, last seen)
Counter = tuple[int, float, float]


class LoginThrottle:
    """Failure counters per client of a login, per login (untrusted clients) and per source."""

    def __init__(self, policy: ThrottlePolicy = ThrottlePolicy()) -> None:
        self.policy = policy
        self._entries: dict[Key, _Entry] = {}
        self._known: dict[tuple[str, str], float] = {}  # (login, source) -> last success

    @staticmethod
    def keys_of(login: str, source: str, device: str | None = None) -> list[Key]:
        """Every counter an attempt of this client of ``login`` may read or change."""
        client: Key = ("device", login, device) if device is not None else ("pair", login, source)
        return [client, ("source", source), ("login", login)]

    def load(self, counters: dict[Key, Counter], known: dict[tuple[str, str], float]) -> None:
        """Take these counters and known sources as the state (a shared store's rows)."""
        self._entries = {k: _Entry(*v) for k, v in counters.items()}
        self._known = dict(known)

    def counters(self) -> tuple[dict[Key, Counter], dict[tuple[str, str], float]]:
        """The state: counters and known sources (to write back to a shared store)."""
        entries = {k: (e.failures, e.blocked_until, e.last_seen) for k, e in self._entries.items()}
        return entries, dict(self._known)

    def trusted(self, login: str, source: str, now: float, device: str | None = None) -> bool:
        """True if the client presents a device token of ``login`` (``device`` is its
        verified id) or ``login`` succeeded from ``source`` recently."""
        if device is not None:
            return True
        seen = self._known.get((login, source))
        return seen is not None and now - seen < self.policy.known_source_ttl_s

    def _keys(
        self, login: str, source: str, now: float, device: str | None
    ) -> list[tuple[Key, int]]:
        """The counters that apply to this attempt, with their free failures."""
        p = self.policy
        client: Key = ("device", login, device) if device is not None else ("pair", login, source)
        keys: list[tuple[Key, int]] = [(client, p.free_failures)]
        if device is None:
            keys.append((("source", source), p.source_free_failures))
        if not self.trusted(login, source, now, device):
            keys.append((("login", login), p.free_failures))
        return keys

    def check(self, login: str, source: str, now: float, device: str | None = None) -> None:
        """Raise :class:`Throttled` if this client of ``login`` must wait."""
        wait = 0.0
        for key, _free in self._keys(login, source, now, device):
            entry = self._entries.get(key)
            if entry is not None:
                wait = max(wait, entry.blocked_until - now)
        if wait > 0:
            raise Throttled(wait)

    def failure(self, login: str, source: str, now: float, device: str | None = None) -> None:
        """Record a failed attempt (it always counts against the login too)."""
        keys = dict(self._keys(login, source, now, device))
        keys.setdefault(("login", login), self.policy.free_failures)
        for key, free in keys.items():
            entry = self._entries.pop(key, None) or _Entry(0, 0.0, now)
            entry.failures += 1
            entry.last_seen = now
            excess = entry.failures - free
            if excess > 0:
                doubling = 2.0 ** min(excess - 1, 64)  # no float overflow after the cap
                delay = min(self.policy.max_delay_s, self.policy.base_delay_s * doubling)
                entry.blocked_until = now + delay
            self._entries[key] = entry
        self._evict(now)

    def success(self, login: str, source: str, now: float, device: str | None = None) -> None:
        """Record a successful login: its client starts again and its source becomes known."""
        for key, _free in self._keys(login, source, now, device):
            if key[0] != "source":
                self._entries.pop(key, None)
        self._known.pop((login, source), None)
        self._known[(login, source)] = now
        self._evict(now)

    def _evict(self, now: float) -> None:
        limit = self.policy.max_entries
        if len(self._entries) > limit:
            horizon = now - self.policy.forget_after_s
            for key in [k for k, e in self._entries.items() if e.last_seen < horizon]:
                del self._entries[key]
            # Oldest first, but never a counter that still blocks: evicting it would let a
            # flood of junk failures erase a guesser's lock. Blocked counters expire within
            # ``max_delay_s`` of their last failure, so the table stays bounded by the rate
            # of failures over that time.
            for key in [k for k, e in self._entries.items() if e.blocked_until <= now]:
                if len(self._entries) <= limit:
                    break
                del self._entries[key]
        if len(self._known) > limit:
            horizon = now - self.policy.known_source_ttl_s
            for pair in [k for k, seen in self._known.items() if seen < horizon]:
                del self._known[pair]
            while len(self._known) > limit:
                del self._known[next(iter(self._known))]
