"""Login throttling: exponential backoff per login and per source address.

Theory of operation
-------------------
* Each login name and each source address has a failure counter. The first
  ``free_failures`` failures cost nothing; after that every failure doubles the wait
  (``base_delay_s * 2**(failures - free_failures)``, capped at ``max_delay_s``) before the
  next attempt is even checked. A source gets a larger free budget than a login (many users
  may share one address behind a proxy).
* :meth:`LoginThrottle.check` raises :class:`Throttled` (with ``retry_after`` seconds) while
  either counter is blocked; a success clears the login's counter (not the source's).
* Entries idle for ``forget_after_s`` are forgotten; the table is bounded. The clock is passed
  in. State is per process: a gateway with several replicas throttles per replica.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class ThrottlePolicy:
    """Backoff parameters."""

    free_failures: int = 3
    source_free_failures: int = 20
    base_delay_s: float = 1.0
    max_delay_s: float = 900.0
    forget_after_s: float = 3600.0
    max_entries: int = 100_000


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


class LoginThrottle:
    """Failure counters per login and per source, with exponential backoff."""

    def __init__(self, policy: ThrottlePolicy = ThrottlePolicy()) -> None:
        self.policy = policy
        self._entries: dict[tuple[str, str], _Entry] = {}

    def _keys(self, login: str, source: str) -> list[tuple[tuple[str, str], int]]:
        return [
            (("login", login), self.policy.free_failures),
            (("source", source), self.policy.source_free_failures),
        ]

    def check(self, login: str, source: str, now: float) -> None:
        """Raise :class:`Throttled` if ``login`` or ``source`` must wait."""
        wait = 0.0
        for key, _free in self._keys(login, source):
            entry = self._entries.get(key)
            if entry is not None:
                wait = max(wait, entry.blocked_until - now)
        if wait > 0:
            raise Throttled(wait)

    def failure(self, login: str, source: str, now: float) -> None:
        """Record a failed attempt."""
        for key, free in self._keys(login, source):
            entry = self._entries.pop(key, None) or _Entry(0, 0.0, now)
            entry.failures += 1
            entry.last_seen = now
            excess = entry.failures - free
            if excess > 0:
                delay = min(self.policy.max_delay_s, self.policy.base_delay_s * 2 ** (excess - 1))
                entry.blocked_until = now + delay
            self._entries[key] = entry
        self._evict(now)

    def success(self, login: str, source: str) -> None:
        """Record a successful login: the login's counter starts again."""
        self._entries.pop(("login", login), None)

    def _evict(self, now: float) -> None:
        if len(self._entries) <= self.policy.max_entries:
            return
        horizon = now - self.policy.forget_after_s
        for key in [k for k, e in self._entries.items() if e.last_seen < horizon]:
            del self._entries[key]
        while len(self._entries) > self.policy.max_entries:
            del self._entries[next(iter(self._entries))]
