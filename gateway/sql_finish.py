"""Leaves of the SQL-JSON path that Python finishes after the statement (decision D65).

A :class:`gateway.sql_fields.Leaf` with ``finish`` is read by the statement as what its
resolver computes from (the aggregates behind ``recentTps``, an envelope's hex behind
``arguments``, the integer behind ``timestampMs``); once the statement's JSON is parsed,
:meth:`Finished.apply` runs the resolver's own function on it at the leaf's response path,
in every element of the lists on the way, then the field's ``serialize``, as graphql-core
completes a value: a null, in or out, stays null.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Path = tuple[str, ...]  # response keys from a root field's value to a leaf (lists crossed)
Finish = Callable[[Any], Any]


def then_serialize(finish: Finish, serialize: Finish) -> Finish:
    """``finish``, then the scalar's ``serialize``; null stays null."""

    def finished(raw: Any) -> Any:
        value = None if raw is None else finish(raw)
        return None if value is None else serialize(value)

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
