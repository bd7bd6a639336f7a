"""Bounded structural check of Avro binary data against a writer schema, before decoding.

Theory of operation
-------------------
fastavro trusts its input: a truncated ``bytes`` field at the end of a record silently reads
short, and a huge array count of zero-size items loops for a long time. So before fastavro sees
a body, :func:`check` walks it once against the expanded writer schema and proves that it is
well formed:

* every varint is at most 10 bytes, minimal (no redundant trailing zero groups) and in range
  (``int`` within 32 bits, ``long`` within 64 bits);
* every declared length (bytes, string, fixed, array/map block) is non-negative and fits in the
  bytes that remain; strings are valid UTF-8; booleans are 0 or 1;
* an array or map is one block, as the codec writes it: a positive item count, the items, then
  0 (no byte-size form with a negative count, no split into several blocks), so that, with
  minimal varints, the encoding of a value is unique (``parse_tx`` hashes the sliced bytes);
* union and enum indexes are in range;
* the number of items of zero-size types is bounded by ``MAX_ZERO_SIZE_ITEMS``, and nesting by
  ``MAX_DEPTH``;
* the walk consumes the input exactly (no trailing garbage).

Work and memory are thus linear in the input length, which the codec bounds beforehand.
Any violation raises :class:`~schemas.errors.CodecError`.

Every transaction is checked by every validator, so the walk is compiled once per schema into
nested closures (:func:`_compile`: no per-byte dispatch on the schema, single-byte varints on a
fast path). Schemas the compiler does not take (recursive ones, or nested deeper than
``MAX_DEPTH``) use the generic walker, :meth:`WireChecker.walk_check`, which is also the
reference the compiled form is tested against.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from schemas.errors import CodecError

MAX_DEPTH = 64
MAX_ZERO_SIZE_ITEMS = 4096
_INT32 = 1 << 31
_UINT64 = 1 << 64


class _Cursor:
    __slots__ = ("data", "end", "pos", "zero_items")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.end = len(data)
        self.zero_items = 0

    def long(self) -> int:
        shift = 0
        value = 0
        for i in range(10):
            if self.pos >= self.end:
                raise CodecError("truncated", "varint")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                if byte == 0 and i > 0:
                    raise CodecError("non_canonical", "varint has redundant bytes")
                if value >= _UINT64:
                    raise CodecError("overflow", "varint exceeds 64 bits")
                return (value >> 1) ^ -(value & 1)
        raise CodecError("overflow", "varint longer than 10 bytes")

    def take(self, size: int) -> bytes:
        if size < 0:
            raise CodecError("negative_length", str(size))
        if size > self.end - self.pos:
            raise CodecError("truncated", f"need {size} bytes, {self.end - self.pos} left")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk


def _min_size(schema: Any, names: Mapping[str, Any], depth: int = 0) -> int:
    """Smallest possible encoding of a value of ``schema`` (0 for null, empty records...)."""
    if depth > MAX_DEPTH:
        return 0
    if isinstance(schema, str):
        if schema == "null":
            return 0
        if schema in names:
            return _min_size(names[schema], names, depth + 1)
        return 1
    if isinstance(schema, list):
        return 1
    kind = schema["type"]
    if kind in ("record", "error"):
        return sum(_min_size(f["type"], names, depth + 1) for f in schema["fields"])
    if kind == "fixed":
        return int(schema["size"])
    if kind in ("enum", "array", "map"):
        return 1
    return _min_size(kind, names, depth + 1)


def _collect_names(schema: Any, names: dict[str, Any]) -> None:
    if isinstance(schema, list):
        for branch in schema:
            _collect_names(branch, names)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            name = schema["name"]
            full = name if "." in name else f"{schema.get('namespace', 'pantheon')}.{name}"
            names[full] = schema
            for field in schema.get("fields", ()):
                _collect_names(field["type"], names)
        elif kind == "array":
            _collect_names(schema["items"], names)
        elif kind == "map":
            _collect_names(schema["values"], names)
        elif isinstance(kind, dict | list):
            _collect_names(kind, names)


class WireChecker:
    """Checks bodies written with one expanded writer schema."""

    def __init__(self, expanded: Any) -> None:
        self._schema = expanded
        self._names: dict[str, Any] = {}
        _collect_names(expanded, self._names)
        try:
            self._step: _Step | None = _Compiler(self._names).compile(expanded, 0, ())
        except _NotCompiled:
            self._step = None

    @property
    def compiled(self) -> bool:
        """Whether checks run the compiled form (else the generic walker)."""
        return self._step is not None

    def check(self, body: bytes) -> None:
        """Raise :class:`CodecError` unless ``body`` is exactly one well-formed value."""
        if self._step is None:
            self.walk_check(body)
            return
        end = len(body)
        pos = self._step(body, 0, end, [0])
        if pos != end:
            raise CodecError("trailing_bytes", f"{end - pos} bytes after the record")

    def walk_check(self, body: bytes) -> None:
        """:meth:`check` by the generic walker (the reference for the compiled form)."""
        cur = _Cursor(body)
        self._walk(self._schema, cur, 0)
        if cur.pos != cur.end:
            raise CodecError("trailing_bytes", f"{cur.end - cur.pos} bytes after the record")

    def _walk(self, schema: Any, cur: _Cursor, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise CodecError("too_deep", str(depth))
        if isinstance(schema, list):
            index = cur.long()
            if not 0 <= index < len(schema):
                raise CodecError("bad_union_index", str(index))
            self._walk(schema[index], cur, depth + 1)
            return
        if isinstance(schema, dict):
            kind = schema["type"]
            if kind in ("record", "error"):
                for field in schema["fields"]:
                    self._walk(field["type"], cur, depth + 1)
                return
            if kind == "enum":
                index = cur.long()
                if not 0 <= index < len(schema["symbols"]):
                    raise CodecError("bad_enum_index", str(index))
                return
            if kind == "fixed":
                cur.take(int(schema["size"]))
                return
            if kind in ("array", "map"):
                self._blocks(schema, cur, depth)
                return
            self._walk(kind, cur, depth + 1)
            return
        self._primitive(schema, cur, depth)

    def _primitive(self, schema: str, cur: _Cursor, depth: int) -> None:
        if schema == "null":
            return
        if schema == "boolean":
            if cur.take(1)[0] > 1:
                raise CodecError("bad_boolean")
            return
        if schema == "int":
            value = cur.long()
            if not -_INT32 <= value < _INT32:
                raise CodecError("overflow", "int out of 32-bit range")
            return
        if schema == "long":
            cur.long()
            return
        if schema == "float":
            cur.take(4)
            return
        if schema == "double":
            cur.take(8)
            return
        if schema == "bytes":
            cur.take(cur.long())
            return
        if schema == "string":
            try:
                cur.take(cur.long()).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CodecError("bad_utf8", str(exc)) from exc
            return
        named = self._names.get(schema)
        if named is None:
            raise CodecError("bad_schema", f"unknown type {schema}")
        self._walk(named, cur, depth + 1)

    def _blocks(self, schema: Mapping[str, Any], cur: _Cursor, depth: int) -> None:
        is_map = schema["type"] == "map"
        item = schema["values"] if is_map else schema["items"]
        item_size = (1 if is_map else 0) + _min_size(item, self._names)
        count = cur.long()
        if count == 0:
            return
        if count < 0:
            raise CodecError("non_canonical", "array/map block with a byte size")
        if item_size:
            if count * item_size > cur.end - cur.pos:
                raise CodecError("truncated", f"{count} items cannot fit")
        else:
            cur.zero_items += count
            if cur.zero_items > MAX_ZERO_SIZE_ITEMS:
                raise CodecError("too_many_items", str(cur.zero_items))
        for _ in range(count):
            if is_map:
                self._primitive("string", cur, depth + 1)
            self._walk(item, cur, depth + 1)
        if cur.long() != 0:
            raise CodecError("non_canonical", "array/map in more than one block")


# -- the compiled form ---------------------------------------------------------------------
_Step = Callable[[bytes, int, int, list[int]], int]
"""``step(data, pos, end, zero_items) -> pos after the value``; raises :class:`CodecError`."""


class _NotCompiled(Exception):
    """The schema is recursive or too deep: use the generic walker."""


def _long(data: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos < end:
        byte = data[pos]
        if byte < 0x80:
            return (byte >> 1) ^ -(byte & 1), pos + 1
    cur = _Cursor(data)
    cur.pos, cur.end = pos, end
    value = cur.long()
    return value, cur.pos


def _take(pos: int, end: int, size: int) -> int:
    if size < 0:
        raise CodecError("negative_length", str(size))
    if size > end - pos:
        raise CodecError("truncated", f"need {size} bytes, {end - pos} left")
    return pos + size


def _null(data: bytes, pos: int, end: int, zero: list[int]) -> int:
    return pos


def _boolean(data: bytes, pos: int, end: int, zero: list[int]) -> int:
    after = _take(pos, end, 1)
    if data[pos] > 1:
        raise CodecError("bad_boolean")
    return after


def _int(data: bytes, pos: int, end: int, zero: list[int]) -> int:
    value, pos = _long(data, pos, end)
    if not -_INT32 <= value < _INT32:
        raise CodecError("overflow", "int out of 32-bit range")
    return pos


def _long_step(data: bytes, pos: int, end: int, zero: list[int]) -> int:
    return _long(data, pos, end)[1]


def _float(data: bytes, pos: int, end: int, zero: list[int]) -> int:
    return _take(pos, end, 4)


def _double(data: bytes, pos: int, end: int, zero: list[int]) -> int:
    return _take(pos, end, 8)


def _bytes(data: bytes, pos: int, end: int, zero: list[int]) -> int:
    size, pos = _long(data, pos, end)
    return _take(pos, end, size)


def _string(data: bytes, pos: int, end: int, zero: list[int]) -> int:
    size, pos = _long(data, pos, end)
    after = _take(pos, end, size)
    try:
        data[pos:after].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CodecError("bad_utf8", str(exc)) from exc
    return after


_PRIMITIVES: dict[str, _Step] = {
    "null": _null,
    "boolean": _boolean,
    "int": _int,
    "long": _long_step,
    "float": _float,
    "double": _double,
    "bytes": _bytes,
    "string": _string,
}


class _Compiler:
    """Turns an expanded schema into one :data:`_Step` (same checks as the walker)."""

    def __init__(self, names: Mapping[str, Any]) -> None:
        self.names = names

    def compile(self, schema: Any, depth: int, naming: tuple[str, ...]) -> _Step:
        if depth > MAX_DEPTH:
            raise _NotCompiled
        if isinstance(schema, list):
            return self._union([self.compile(b, depth + 1, naming) for b in schema])
        if isinstance(schema, dict):
            kind = schema["type"]
            if kind in ("record", "error"):
                fields = [self.compile(f["type"], depth + 1, naming) for f in schema["fields"]]
                return self._record([f for f in fields if f is not _null])
            if kind == "enum":
                return self._enum(len(schema["symbols"]))
            if kind == "fixed":
                size = int(schema["size"])
                return lambda data, pos, end, zero: _take(pos, end, size)
            if kind in ("array", "map"):
                return self._blocks(schema, depth, naming)
            return self.compile(kind, depth + 1, naming)
        primitive = _PRIMITIVES.get(schema)
        if primitive is not None:
            return primitive
        named = self.names.get(schema)
        if named is None:
            raise CodecError("bad_schema", f"unknown type {schema}")
        if schema in naming:
            raise _NotCompiled  # recursive: the walker bounds its depth at run time
        return self.compile(named, depth + 1, (*naming, schema))

    @staticmethod
    def _union(branches: list[_Step]) -> _Step:
        count = len(branches)

        def step(data: bytes, pos: int, end: int, zero: list[int]) -> int:
            index, pos = _long(data, pos, end)
            if not 0 <= index < count:
                raise CodecError("bad_union_index", str(index))
            return branches[index](data, pos, end, zero)

        return step

    @staticmethod
    def _record(fields: list[_Step]) -> _Step:
        def step(data: bytes, pos: int, end: int, zero: list[int]) -> int:
            for field in fields:
                pos = field(data, pos, end, zero)
            return pos

        return step

    @staticmethod
    def _enum(count: int) -> _Step:
        def step(data: bytes, pos: int, end: int, zero: list[int]) -> int:
            index, pos = _long(data, pos, end)
            if not 0 <= index < count:
                raise CodecError("bad_enum_index", str(index))
            return pos

        return step

    def _blocks(self, schema: Mapping[str, Any], depth: int, naming: tuple[str, ...]) -> _Step:
        is_map = schema["type"] == "map"
        item_schema = schema["values"] if is_map else schema["items"]
        item = self.compile(item_schema, depth + 1, naming)
        item_size = (1 if is_map else 0) + _min_size(item_schema, self.names)

        def step(data: bytes, pos: int, end: int, zero: list[int]) -> int:
            count, pos = _long(data, pos, end)
            if count == 0:
                return pos
            if count < 0:
                raise CodecError("non_canonical", "array/map block with a byte size")
            if item_size:
                if count * item_size > end - pos:
                    raise CodecError("truncated", f"{count} items cannot fit")
            else:
                zero[0] += count
                if zero[0] > MAX_ZERO_SIZE_ITEMS:
                    raise CodecError("too_many_items", str(zero[0]))
            for _ in range(count):
                if is_map:
                    pos = _string(data, pos, end, zero)
                pos = item(data, pos, end, zero)
            count, pos = _long(data, pos, end)
            if count != 0:
                raise CodecError("non_canonical", "array/map in more than one block")
            return pos

        return step
