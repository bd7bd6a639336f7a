"""Leaves of the SQL-JSON path that Python finishes after the statement (decision D65).

A :class:`gateway.sql_fields.Leaf` with ``finish`` is read by the statement as what its
resolver computes from (the aggregates behind ``recentTps``, an envelope's hex behind
``arguments``, the integer behind ``timestampMs``); once the statement's JSON is parsed,
:meth:`Finished.apply` runs the resolver's own function on it at the leaf's response path,
in every element of the lists on the way, then the field's ``serialize``, as graphql-core
completes a value: a null, in or out, stays null.

A leaf marked ``memo`` (``arguments``, D68) is finished from nothing but its own raw value
(an envelope's hex: the row's own bytes, not an id the row claims), so its finished value is
kept in a bounded cache keyed by that raw text, the finishing function and the scalar's
``serialize``: a tampered row has other bytes, hence its own entry, and cannot change the
answer for another row. Only ``str`` raw values up to :data:`MEMO_KEY_CHARS` characters are
kept (at most :data:`MEMO_ENTRIES` of them), and only immutable finished values (a ``str``,
number, bool or null) are shared between responses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

Path = tuple[str, ...]  # response keys from a root field's value to a leaf (lists crossed)
Finish = Callable[[Any], Any]

MEMO_ENTRIES = 1024  #: finished values kept for ``memo`` leaves (all plans together)
MEMO_KEY_CHARS = 8192  #: a longer raw value (an envelope over 4 KiB) is finished each time
_SHAREABLE = (str, int, float, bool, type(None))


def _finish(finish: Finish, serialize: Finish, raw: Any) -> Any:
    value = None if raw is None else finish(raw)
    return None if value is None else serialize(value)


@lru_cache(maxsize=MEMO_ENTRIES)
def _kept(finish: Finish, serialize: Finish, raw: str) -> Any:
    return _finish(finish, serialize, raw)


def then_serialize(finish: Finish, serialize: Finish, *, memo: bool = False) -> Finish:
    """``finish``, then the scalar's ``serialize``; null stays null. With ``memo``, the
    result is kept by the raw text itself (module docstring)."""

    def finished(raw: Any) -> Any:
        if memo and isinstance(raw, str) and len(raw) <= MEMO_KEY_CHARS:
            value = _kept(finish, serialize, raw)
            if isinstance(value, _SHAREABLE):
                return value
        return _finish(finish, serialize, raw)

    return finished


def _apply(value: Any, path: Path, finish: Finish) -> Any:
    if not path:
        return finish(value)
    if isinstance(value, list):
        return [_apply(item, path, finish) for item in value]
    if isinstance(value, dict):
        value[path[0]] = _apply(value[path[0]], path[1:], finish)
    return value  # None: an absent object has no leaves


@dataclass(frozen=True, slots=True)
class Finished:
    """A finished leaf under root response key ``key``, at ``path`` below it."""

    key: str
    path: Path
    finish: Finish

    def apply(self, values: dict[str, Any]) -> None:
        """Finish the leaf in the root fields' parsed ``values`` (in place)."""
        values[self.key] = _apply(values[self.key], self.path, self.finish)
