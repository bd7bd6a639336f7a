"""Hypothesis strategies of Avro values for a parsed schema: valid ones, and hostile ones
(wrong types, bools for ints, out-of-range ints, bytearrays, unencodable strings, missing and
extra fields, wrong union names, ``-type`` keys, dict subclasses) for the codec's property
tests (D51)."""

from __future__ import annotations

import collections
import enum
from typing import Any

from hypothesis import strategies as st


class Small(enum.IntEnum):
    ONE = 1


def junk() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.sampled_from([2**31, -(2**31) - 1, 2**63, -(2**63) - 1, Small.ONE, 1.0, 0.5]),
        st.binary(max_size=4).map(bytearray),
        st.sampled_from(["\ud800", "a\udfff", "ACTIVE", "OPEN", "pantheon.KeyState"]),
        st.tuples(st.sampled_from(["pantheon.KeyState", "pantheon.Nope", "null"]), st.none()),
        st.tuples(st.text(max_size=3)),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        st.lists(st.integers(), max_size=2),
    )


def values(schema: Any, named: dict[str, Any], hostile: bool, depth: int = 0) -> Any:
    valid = _valid(schema, named, hostile, depth)
    return st.one_of(valid, junk()) if hostile else valid


def _valid(schema: Any, named: dict[str, Any], hostile: bool, depth: int) -> Any:
    if isinstance(schema, str):
        primitive = {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": st.integers(min_value=-(2**31), max_value=2**31 - 1),
            "long": st.integers(min_value=-(2**63), max_value=2**63 - 1),
            "string": st.text(max_size=8),
            "bytes": st.binary(max_size=40),
        }.get(schema)
        if primitive is not None:
            return primitive
        return _valid(named[schema], named, hostile, depth + 1)
    if isinstance(schema, list):
        others = [b for b in schema if b != "null"]
        branches: list[st.SearchStrategy[Any]] = [st.none()] if "null" in schema else []
        for branch in others:
            name = branch["name"] if isinstance(branch, dict) else branch
            inner = values(branch, named, hostile, depth + 1)
            if (
                isinstance(named.get(name, branch), dict)
                and named.get(name, branch).get("type") == "record"
            ):
                branches.append(st.tuples(st.just(name), inner))
            if len(others) == 1:
                branches.append(inner)
        return st.one_of(branches)
    kind = schema["type"]
    if kind == "record":
        named.setdefault(schema["name"], schema)
        fields = {f["name"]: values(f["type"], named, hostile, depth + 1) for f in schema["fields"]}
        record = st.fixed_dictionaries(fields)
        if not hostile:
            return record
        return st.one_of(
            record,
            record.map(lambda r: dict(list(r.items())[1:])),  # a missing field
            record.map(lambda r: {**r, "extra": 1}),
            record.map(lambda r: {**r, "-type": "pantheon.Other"}),
            record.map(collections.OrderedDict),
        )
    if kind == "enum":
        named.setdefault(schema["name"], schema)
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        items = values(schema["items"], named, hostile, depth + 1)
        lists = st.lists(items, max_size=3 if depth < 6 else 0)
        return st.one_of(lists, lists.map(tuple)) if hostile else lists
    return _valid(kind, named, hostile, depth + 1)
