"""A compiled one-pass check and decode of Avro bodies, beside the wire check and fastavro.

Theory of operation
-------------------
:func:`schemas.codec.decode` proves a body well formed with :mod:`schemas.wirecheck` and
then reads it with fastavro: two walks, about 8 us per transaction envelope that every
validator decodes (decisions D51). This module compiles a parsed writer schema once into
nested decoders (each record's generated as one function) that do both in one walk,
returning what fastavro returns (records as dicts, with ``return_record_name`` and
``return_record_name_override``: a union branch that is a record, or a reference to a
named type, as ``(full name, value)`` unless the union has a single record branch).

It accepts only bodies that the wire check accepts, applying the same rules: minimal
varints of at most 10 bytes within 64 bits, ``int`` within 32 bits, lengths that fit,
strict UTF-8, booleans 0 or 1, union and enum indexes in range, an array as one block with
a positive count (bounded by the bytes left) and a terminating 0, and the input consumed
exactly. Anything else raises :class:`Declined` (never a value), and the caller runs the
reference path, which gives the codec's usual error. Schemas outside the fast path (maps,
fixed, floats, logical types, recursion, arrays whose items may take no bytes) are not
compiled. ``tests/unit/test_fastread.py`` compares both paths on valid and mutated bodies
of every schema: identical values, or the reference refuses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_INT32 = 1 << 31
_UINT64 = 1 << 64

Decoder = Callable[[bytes, int], tuple[Any, int]]
"""``decode(data, pos) -> (value, position after it)``; raises :class:`Declined`."""


class Declined(Exception):
    """Not a body this path reads: run the reference path (which gives the error)."""


class _NotCompiled(Exception):
    """The schema uses a type the fast path does not take."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint at ``pos``, with the wire check's rules."""
    value = 0
    shift = 0
    end = len(data)
    for i in range(10):
        if pos >= end:
            raise Declined
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if (byte == 0 and i > 0) or value >= _UINT64:
                raise Declined
            return (value >> 1) ^ -(value & 1), pos
    raise Declined


def _long(data: bytes, pos: int) -> tuple[int, int]:
    if pos + 1 < len(data):  # one or two bytes (lengths of keys, signatures, small counts)
        byte = data[pos]
        if byte < 0x80:
            return (byte >> 1) ^ -(byte & 1), pos + 1
        second = data[pos + 1]
        if 0 < second < 0x80:  # a second byte of 0 would be a redundant one
            value = (byte & 0x7F) | (second << 7)
            return (value >> 1) ^ -(value & 1), pos + 2
    return _varint(data, pos)


def _null(data: bytes, pos: int) -> tuple[Any, int]:
    return None, pos


def _boolean(data: bytes, pos: int) -> tuple[Any, int]:
    if pos >= len(data) or data[pos] > 1:
        raise Declined
    return data[pos] == 1, pos + 1


def _int(data: bytes, pos: int) -> tuple[Any, int]:
    value, pos = _long(data, pos)
    if not -_INT32 <= value < _INT32:
        raise Declined
    return value, pos


# ``long``, ``bytes`` and ``string`` are read by these steps, written once as source: the
# decoders of ``bytes`` and ``string`` are generated from them, and a record's decoder is
# generated as one function with them inline (a call and a tuple fewer per field). Only
# generated names appear in generated source; field names and sub-decoders are passed in
# as constants. A step past the end raises IndexError, bad UTF-8 UnicodeDecodeError:
# :func:`decode` declines both.
_LENGTH = """
    b = data[pos]
    if b < 0x80 and not b & 1:
        size = b >> 1
        pos += 1
    else:
        size, pos = _long(data, pos)
    after = pos + size
    if size < 0 or after > len(data):
        raise Declined
"""
_STEPS = {
    "long": """
    b = data[pos]
    if b < 0x80:
        v{n} = (b >> 1) ^ -(b & 1)
        pos += 1
    else:
        v{n}, pos = _long(data, pos)
""",
    "bytes": _LENGTH + "    v{n} = data[pos:after]\n    pos = after\n",
    "string": _LENGTH + "    v{n} = data[pos:after].decode('utf-8')\n    pos = after\n",
}


def _generate(steps: list[str], result: str, constants: dict[str, Any]) -> Decoder:
    source = "\n".join(["def decode(data, pos):", *steps, f"    return {result}, pos"])
    scope: dict[str, Any] = {"_long": _long, "Declined": Declined, **constants}
    exec(source, scope)  # generated from the constant steps above and generated names
    decoder: Decoder = scope["decode"]
    return decoder


_bytes = _generate([_STEPS["bytes"].format(n=0)], "v0", {})
_string = _generate([_STEPS["string"].format(n=0)], "v0", {})
_INLINE: dict[Decoder, str] = {
    _long: _STEPS["long"],
    _bytes: _STEPS["bytes"],
    _string: _STEPS["string"],
}


_PRIMITIVES: dict[str, tuple[Decoder, int]] = {
    # decoder, smallest encoding in bytes
    "null": (_null, 0),
    "boolean": (_boolean, 1),
    "int": (_int, 1),
    "long": (_long, 1),
    "bytes": (_bytes, 1),
    "string": (_string, 1),
}


def _record(fields: list[tuple[str, Decoder]]) -> Decoder:
    steps: list[str] = []
    constants: dict[str, Any] = {}
    for n, (name, field) in enumerate(fields):
        constants[f"k{n}"] = name
        inline = _INLINE.get(field)
        if inline is None:
            constants[f"d{n}"] = field
            steps.append(f"    v{n}, pos = d{n}(data, pos)")
        else:
            steps.append(inline.format(n=n))
    pairs = ", ".join(f"k{n}: v{n}" for n in range(len(fields)))
    return _generate(steps, "{" + pairs + "}", constants)


def _enum(symbols: list[str]) -> Decoder:
    count = len(symbols)

    def decode(data: bytes, pos: int) -> tuple[Any, int]:
        index, pos = _long(data, pos)
        if not 0 <= index < count:
            raise Declined
        return symbols[index], pos

    return decode


def _array(item: Decoder, item_size: int) -> Decoder:
    def decode(data: bytes, pos: int) -> tuple[Any, int]:
        count, pos = _long(data, pos)
        if count == 0:
            return [], pos
        if count < 0 or count * item_size > len(data) - pos:
            raise Declined
        items = []
        for _ in range(count):
            value, pos = item(data, pos)
            items.append(value)
        if pos >= len(data) or data[pos] != 0:
            raise Declined
        return items, pos + 1

    return decode


def _union(branches: list[tuple[Decoder, str | None]]) -> Decoder:
    count = len(branches)

    def decode(data: bytes, pos: int) -> tuple[Any, int]:
        index, pos = _long(data, pos)
        if not 0 <= index < count:
            raise Declined
        branch, name = branches[index]
        value, pos = branch(data, pos)
        return (value if name is None else (name, value)), pos

    return decode


class _Compiler:
    """One schema's compilation (named types by full name, as in :mod:`schemas.fastwrite`)."""

    def __init__(self) -> None:
        self.named: dict[str, tuple[Decoder, int]] = {}

    def compile(self, schema: Any, depth: int) -> tuple[Decoder, int]:
        """The decoder of ``schema`` and the smallest encoding of its values."""
        if depth > 64:
            raise _NotCompiled
        if isinstance(schema, list):
            return self._union(schema, depth), 1
        if isinstance(schema, str):
            found = _PRIMITIVES.get(schema) or self.named.get(schema)
            if found is None:
                raise _NotCompiled  # recursion, or a type the fast path does not take
            return found
        if not isinstance(schema, dict) or "logicalType" in schema:
            raise _NotCompiled
        kind = schema.get("type")
        if kind == "record":
            fields = [(f["name"], self.compile(f["type"], depth + 1)) for f in schema["fields"]]
            size = sum(s for _, (_, s) in fields)
            return self._define(schema["name"], _record([(n, d) for n, (d, _) in fields]), size)
        if kind == "enum":
            return self._define(schema["name"], _enum(list(schema["symbols"])), 1)
        if kind == "array":
            item, size = self.compile(schema["items"], depth + 1)
            if size == 0:
                raise _NotCompiled  # zero-size items: the wire check's count bound applies
            return _array(item, size), 1
        if isinstance(kind, str) and kind in _PRIMITIVES and len(schema) == 1:
            return _PRIMITIVES[kind]
        raise _NotCompiled

    def _define(self, name: str, decoder: Decoder, size: int) -> tuple[Decoder, int]:
        if name in self.named:
            raise _NotCompiled
        self.named[name] = (decoder, size)
        return decoder, size

    def _union(self, schema: list[Any], depth: int) -> Decoder:
        # fastavro's naming (return_record_name with its override): a record or a reference
        # to a named type is returned with its name, unless it is the union's only one.
        def named(branch: Any) -> bool:
            if isinstance(branch, dict):
                return branch.get("type") == "record"
            return isinstance(branch, str) and branch not in _PRIMITIVES

        single = sum(1 for b in schema if named(b)) == 1
        branches = []
        for branch in schema:
            decoder, _ = self.compile(branch, depth + 1)
            name = None
            if named(branch) and not single:
                name = branch["name"] if isinstance(branch, dict) else branch
            branches.append((decoder, name))
        return _union(branches)


def compile_decoder(parsed: Any) -> Decoder | None:
    """A decoder for fastavro's parsed writer ``schema``, or None outside the fast path."""
    try:
        return _Compiler().compile(parsed, 0)[0]
    except _NotCompiled:
        return None


def decode(decoder: Decoder, body: bytes) -> Any:
    """The value of the whole ``body``; raises :class:`Declined` unless the wire check would
    accept it."""
    try:
        value, pos = decoder(body, 0)
    except (IndexError, UnicodeDecodeError, RecursionError) as exc:
        raise Declined from exc
    if pos != len(body):
        raise Declined
    return value
