"""What a resolver sees: the caller's claims, one pooled database connection, the services.

A request executes in one worker thread; its :class:`RequestContext` checks a connection out
of the pool on first use and returns it when the request ends (:meth:`close`).

Batched loads: a resolver that returns a list of rows records it (:attr:`RequestContext.listed`,
by row type); a per-object lookup below it (a transaction's block, its sender's identity, a
block's certificate votes or entries) asks the request's :class:`Batch` for its key and, on a
miss, names the keys of the listed siblings too, which are then fetched with one statement:
a list costs one statement per level instead of one per object. Values live as long as the
request.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Generic, Protocol, TypeVar

from psycopg_pool import ConnectionPool

from gateway.auth.tokens import Claims
from gateway.authn import Accounts
from gateway.errors import BadInput
from projections.read import Conn


class Submitter(Protocol):
    """Produces a validated envelope to the ledger's tx topic (idempotent, acks=all)."""

    def submit(self, raw: bytes, key: bytes) -> None: ...


@dataclass(slots=True)
class Services:
    """Long-lived dependencies shared by every request."""

    institution: str
    pool: ConnectionPool[Any]
    accounts: Accounts | None = None
    submitter: Submitter | None = None


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Batch(Generic[K, V]):
    """Values by key for one request, fetched for all wanted keys at once."""

    def __init__(self, fetch: Callable[[Conn, list[K]], Mapping[K, V]]) -> None:
        self._fetch = fetch
        self._found: dict[K, V | None] = {}

    def get(self, conn: Conn, key: K, siblings: Iterable[K] = ()) -> V | None:
        """The value of ``key`` (None if absent); a miss fetches ``key`` and the not yet
        fetched ``siblings`` (only iterated on a miss) with one call of ``fetch``."""
        if key not in self._found:
            wanted = dict.fromkeys([key, *siblings])
            keys = [k for k in wanted if k not in self._found]
            found = self._fetch(conn, keys)
            for k in keys:
                self._found[k] = found.get(k)
        return self._found[key]

    def values(self) -> list[V]:
        """Every value fetched so far (absent keys left out)."""
        return [v for v in self._found.values() if v is not None]


@dataclass(slots=True)
class RequestContext:
    """Per-request state handed to resolvers as ``info.context``."""

    services: Services
    claims: Claims | None
    source: str = ""
    _conn: Conn | None = field(default=None, repr=False)
    _lease: Any = field(default=None, repr=False)
    _batches: dict[Hashable, Batch[Any, Any]] = field(default_factory=dict, repr=False)
    #: the newest list of rows of each kind (``"Transaction"``, ``"Block"``) a resolver returned
    listed: dict[str, Sequence[Any]] = field(default_factory=dict, repr=False)

    def batch(
        self, name: Hashable, fetch: Callable[[Conn, list[Any]], Mapping[Any, Any]]
    ) -> Batch[Any, Any]:
        """The request's batch called ``name`` (made with ``fetch`` on first use)."""
        found = self._batches.get(name)
        if found is None:
            found = self._batches[name] = Batch(fetch)
        return found

    def conn(self) -> Conn:
        """The request's database connection (checked out on first use)."""
        if self._conn is None:
            self._lease = self.services.pool.connection()
            self._conn = self._lease.__enter__()
        return self._conn

    def close(self) -> None:
        """Give the connection back to the pool."""
        if self._lease is not None:
            lease, self._lease, self._conn = self._lease, None, None
            lease.__exit__(None, None, None)


def hex_bytes(value: str | None, what: str, length: int | None = 32) -> bytes:
    """Bytes of a hex argument (``0x`` prefix allowed); :class:`BadInput` otherwise."""
    text = (value or "").strip().lower().removeprefix("0x")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise BadInput(f"{what} must be hexadecimal", argument=what) from None
    if length is not None and len(raw) != length:
        raise BadInput(f"{what} must be {length} bytes ({2 * length} hex digits)", argument=what)
    return raw


def hexs(value: bytes | None) -> str | None:
    """Lowercase hex of bytes (None stays None)."""
    return None if value is None else value.hex()


@lru_cache(maxsize=8192)  # pages of recent blocks repeat their cursors
def encode_cursor(kind: str, *parts: int) -> str:
    """An opaque cursor: base64url of ``kind:part:part``."""
    text = ":".join([kind, *(str(p) for p in parts)])
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: str, arity: int) -> tuple[int, ...] | None:
    """The integers of a cursor made by :func:`encode_cursor`; :class:`BadInput` if foreign."""
    if cursor is None or cursor == "":
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        name, *parts = text.split(":")
        values = tuple(int(p) for p in parts)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadInput("invalid cursor", argument="after") from None
    if name != kind or len(values) != arity:
        raise BadInput("this cursor belongs to another list", argument="after")
    return values
