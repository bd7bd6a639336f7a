"""A compiled encoder of canonical bytes for the plainest records, beside fastavro's.

Theory of operation
-------------------
:func:`schemas.codec.canonical` validates a record with fastavro and writes it with
fastavro; that costs several microseconds per record in Python-level dispatch, and every
block hashes a write set of hundreds of records (decisions D51). This module compiles a
parsed schema once into nested closures that write the Avro binary body directly, for a
*strict subset* of the values fastavro accepts:

* ``null`` is ``None``; ``boolean`` is exactly a ``bool``; ``int``/``long`` exactly an ``int``
  (not a ``bool`` or another subclass) within 32/64 bits; ``string`` exactly a ``str``;
  ``bytes`` exactly ``bytes``; an ``enum`` symbol exactly a ``str`` among the symbols;
* an ``array`` is exactly a ``list`` or ``tuple``; a ``record`` is exactly a ``dict`` holding
  every field of the schema (no default is filled in) and no ``-type`` key;
* a ``union`` value is ``None`` (with a ``null`` branch), a ``(full record name, dict)`` tuple
  naming a record branch, or any other value when the union has exactly one branch besides
  ``null``.

Anything else (another type, a missing field, a string that is not UTF-8-encodable, a
schema with ``map``, ``fixed``, ``float``, ``double``, logical types or recursion) makes the
encoder *decline* (:class:`Declined`), and the caller uses fastavro, which then encodes the
value or raises the codec's error. So the fast path can only ever produce bytes for values
fastavro also accepts, and the property test (``tests/unit/test_fastwrite.py``) requires its
bytes to equal fastavro's for valid and hostile values alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_INT32 = 1 << 31
_INT64 = 1 << 63

Encoder = Callable[[Any, list[bytes]], None]
"""``encode(value, parts)``: appends the value's Avro binary encoding to ``parts``."""


class Declined(Exception):
    """The value (or the schema) is outside the fast path: encode it with fastavro."""


class _NotCompiled(Exception):
    """The schema uses a type the fast path does not take."""


_SMALL = tuple(bytes([n]) for n in range(0x80))


def long_bytes(value: int) -> bytes:
    """The zigzag varint of a signed 64-bit ``value`` (not range-checked)."""
    n = (value << 1) ^ (value >> 63)
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _null(value: Any, parts: list[bytes]) -> None:
    if value is not None:
        raise Declined


def _boolean(value: Any, parts: list[bytes]) -> None:
    if type(value) is not bool:
        raise Declined
    parts.append(b"\x01" if value else b"\x00")


def _int(value: Any, parts: list[bytes]) -> None:
    if type(value) is not int or not -_INT32 <= value < _INT32:
        raise Declined
    parts.append(long_bytes(value))


def _long(value: Any, parts: list[bytes]) -> None:
    if type(value) is not int or not -_INT64 <= value < _INT64:
        raise Declined
    parts.append(long_bytes(value))


def _bytes(value: Any, parts: list[bytes]) -> None:
    if type(value) is not bytes:
        raise Declined
    parts.append(long_bytes(len(value)))
    parts.append(value)


def _string(value: Any, parts: list[bytes]) -> None:
    if type(value) is not str:
        raise Declined
    try:
        data = value.encode()
    except UnicodeEncodeError as exc:
        raise Declined from exc
    parts.append(long_bytes(len(data)))
    parts.append(data)


_PRIMITIVES: dict[str, Encoder] = {
    "null": _null,
    "boolean": _boolean,
    "int": _int,
    "long": _long,
    "bytes": _bytes,
    "string": _string,
}


def _record(fields: list[tuple[str, Encoder]]) -> Encoder:
    def encode(value: Any, parts: list[bytes]) -> None:
        if type(value) is not dict or "-type" in value:
            raise Declined
        for name, field in fields:
            field(value[name], parts)  # a missing field: KeyError, declined by encode()

    return encode


def _enum(symbols: list[str]) -> Encoder:
    index = {symbol: long_bytes(n) for n, symbol in enumerate(symbols)}

    def encode(value: Any, parts: list[bytes]) -> None:
        if type(value) is not str or value not in index:
            raise Declined
        parts.append(index[value])

    return encode


def _array(item: Encoder) -> Encoder:
    def encode(value: Any, parts: list[bytes]) -> None:
        kind = type(value)
        if kind is not list and kind is not tuple:
            raise Declined
        if value:
            parts.append(long_bytes(len(value)))
            for element in value:
                item(element, parts)
        parts.append(b"\x00")

    return encode


def _union(branches: list[tuple[Any, Encoder, str | None]]) -> Encoder:
    null_index = next((n for n, (s, _, _) in enumerate(branches) if s == "null"), None)
    null_tag = None if null_index is None else long_bytes(null_index)
    records = {
        record: (long_bytes(n), enc)
        for n, (_, enc, record) in enumerate(branches)
        if record is not None
    }
    others = [(long_bytes(n), enc) for n, (s, enc, _) in enumerate(branches) if s != "null"]
    only = others[0] if len(others) == 1 else None

    def encode(value: Any, parts: list[bytes]) -> None:
        if value is None:
            if null_tag is None:
                raise Declined
            parts.append(null_tag)
            return
        if type(value) is tuple:
            if len(value) != 2 or type(value[0]) is not str or value[0] not in records:
                raise Declined
            tag, branch = records[value[0]]
            parts.append(tag)
            branch(value[1], parts)
            return
        if only is None:
            raise Declined
        parts.append(only[0])
        only[1](value, parts)

    return encode


def compile_encoder(parsed: Any) -> Encoder | None:
    """An encoder for fastavro's parsed ``schema``, or None if it uses a type outside the
    fast path (see the module)."""
    try:
        return _Compiler().compile(parsed, 0)
    except _NotCompiled:
        return None


class _Compiler:
    """One schema's compilation: the named types met so far, by full name (a later mention
    of a name is a reference to the definition met first; a reference to a type still
    being compiled is recursion, which the fast path does not take)."""

    def __init__(self) -> None:
        self.named: dict[str, tuple[Encoder, str]] = {}

    def record_name(self, schema: Any) -> str | None:
        """The full name of ``schema`` if it is a record or a reference to one."""
        if isinstance(schema, dict) and schema.get("type") == "record":
            return str(schema["name"])
        if isinstance(schema, str) and self.named.get(schema, (None, ""))[1] == "record":
            return schema
        return None

    def compile(self, schema: Any, depth: int) -> Encoder:
        if depth > 64:
            raise _NotCompiled
        if isinstance(schema, list):
            return _union([(b, self.compile(b, depth + 1), self.record_name(b)) for b in schema])
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return _PRIMITIVES[schema]
            if schema in self.named:
                return self.named[schema][0]
            raise _NotCompiled  # recursion, or a type the fast path does not take
        if not isinstance(schema, dict) or "logicalType" in schema:
            raise _NotCompiled
        kind = schema.get("type")
        if kind == "record":
            fields = [(f["name"], self.compile(f["type"], depth + 1)) for f in schema["fields"]]
            return self.define(schema["name"], _record(fields), kind)
        if kind == "enum":
            return self.define(schema["name"], _enum(list(schema["symbols"])), kind)
        if kind == "array":
            return _array(self.compile(schema["items"], depth + 1))
        if isinstance(kind, str) and kind in _PRIMITIVES and len(schema) == 1:
            return _PRIMITIVES[kind]
        raise _NotCompiled

    def define(self, name: str, encoder: Encoder, kind: str) -> Encoder:
        if name in self.named:
            raise _NotCompiled  # a name defined twice: leave it to fastavro
        self.named[name] = (encoder, kind)
        return encoder


def encode(encoder: Encoder, value: Any) -> bytes:
    """The Avro binary body of ``value``; raises :class:`Declined` outside the fast path."""
    parts: list[bytes] = []
    try:
        encoder(value, parts)
    except KeyError as exc:  # a record without one of its fields
        raise Declined from exc
    return b"".join(parts)
