"""Avro single-object encoding of Pantheon events, and canonical bytes for hashing.

Theory of operation
-------------------
* A message is ``C3 01`` + the 8-byte little-endian CRC-64-AVRO fingerprint of the writer
  schema's Parsing Canonical Form + the Avro binary body (Avro "single-object encoding").
* The **canonical bytes** of a record are its Avro binary body under the current schema. Avro
  binary is deterministic for a given schema and value as long as no maps are involved, and
  Pantheon's hashed records contain no maps. Every hash and signature is over canonical bytes.
* Unions of records are written and read as ``(full_name, record)`` tuples, so a branch is
  never guessed from field names.
* Decoding is defensive: the message size is bounded (``MAX_MESSAGE_BYTES``), the fingerprint
  must be known, the body is checked structurally by :mod:`schemas.wirecheck` (linear work,
  no allocation beyond the input), and only then handed to fastavro. Anything that fails
  raises :class:`~schemas.errors.CodecError`, never another exception.
* Evolution: :func:`decode_as` reads a record with the writer schema named by its fingerprint
  and resolves it to a reader schema (e.g. a field added with a default).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.validation import validate

from schemas import fastread, fastwrite
from schemas.errors import CodecError
from schemas.registry import SCHEMA_DIR, Registry, SchemaEntry
from schemas.wirecheck import WireChecker

MAGIC = b"\xc3\x01"
HEADER_BYTES = 10
MAX_MESSAGE_BYTES = 1 << 20

_default: Registry | None = None


def registry() -> Registry:
    """The registry of this package's ``*.avsc`` files (loaded once)."""
    global _default  # noqa: PLW0603 - immutable cache of the package's schema files
    if _default is None:
        _default = Registry.from_directory()
    return _default


_checkers: dict[int, WireChecker] = {}


def _check(entry: SchemaEntry, body: bytes) -> None:
    # A fingerprint names one Parsing Canonical Form, so one checker serves every registry.
    checker = _checkers.get(entry.fingerprint)
    if checker is None:
        checker = _checkers[entry.fingerprint] = WireChecker(entry.expanded)
    checker.check(body)


_encoders: dict[int, fastwrite.Encoder | None] = {}
_fast = [True]


def use_fast_paths(enabled: bool) -> None:
    """Whether :func:`canonical` and decoding try the compiled paths of
    :mod:`schemas.fastwrite` and :mod:`schemas.fastread` first (the default) or use only
    the reference (fastavro, behind the wire check): the answers are the same, only the
    cost differs (``bench.validator_core --reference-codec`` compares them, D51)."""
    _fast[0] = enabled


def canonical(schema_name: str, record: Mapping[str, Any], *, reg: Registry | None = None) -> bytes:
    """Canonical bytes (the Avro binary body) of ``record`` under schema ``schema_name``.

    The compiled encoder of :mod:`schemas.fastwrite` writes the plainest records; any value
    it declines is validated and written by fastavro (the reference, D51)."""
    entry = (reg or registry()).by_name(schema_name)
    # A fingerprint names one Parsing Canonical Form: names, field order and types, all
    # that the encoder depends on (it fills in no defaults).
    if not _fast[0]:
        encoder = None
    elif entry.fingerprint in _encoders:
        encoder = _encoders[entry.fingerprint]
    else:
        encoder = _encoders[entry.fingerprint] = fastwrite.compile_encoder(entry.parsed)
    if encoder is not None:
        try:
            return fastwrite.encode(encoder, record)
        except fastwrite.Declined:
            pass
    return reference_canonical(entry, record)


def reference_canonical(entry: SchemaEntry, record: Mapping[str, Any]) -> bytes:
    """:func:`canonical` by fastavro alone (validate, then write): the reference."""
    try:
        validate(record, entry.parsed, raise_errors=True)
        out = io.BytesIO()
        schemaless_writer(out, entry.parsed, record)
    except Exception as exc:
        raise CodecError("bad_record", f"{entry.name}: {exc}") from exc
    return out.getvalue()


def encode(schema_name: str, record: Mapping[str, Any], *, reg: Registry | None = None) -> bytes:
    """Single-object encoding of ``record`` under the current schema ``schema_name``."""
    entry = (reg or registry()).by_name(schema_name)
    return MAGIC + entry.fingerprint_bytes + canonical(entry.name, record, reg=reg)


_decoders: dict[int, fastread.Decoder | None] = {}


def _read(entry: SchemaEntry, body: bytes, reader: SchemaEntry | None) -> dict[str, Any]:
    if reader is None and _fast[0]:
        if entry.fingerprint in _decoders:
            decoder = _decoders[entry.fingerprint]
        else:
            decoder = _decoders[entry.fingerprint] = _compile_decoder(entry)
        if decoder is not None:
            try:
                value = fastread.decode(decoder, body)
            except fastread.Declined:
                pass  # the reference gives the error
            else:
                if isinstance(value, dict):
                    return value
    return reference_read(entry, body, reader)


def _compile_decoder(entry: SchemaEntry) -> fastread.Decoder | None:
    # Only where the wire check is compiled too: its generic walker bounds nesting at run
    # time, which the one-pass reader does not repeat.
    if not WireChecker(entry.expanded).compiled:
        return None
    return fastread.compile_decoder(entry.parsed)


def reference_read(
    entry: SchemaEntry, body: bytes, reader: SchemaEntry | None = None
) -> dict[str, Any]:
    """Check ``body`` with the wire check, then read it with fastavro: the reference of the
    one-pass reader of :mod:`schemas.fastread` (D51)."""
    _check(entry, body)
    return _unchecked_read(entry, body, reader)


def _unchecked_read(entry: SchemaEntry, body: bytes, reader: SchemaEntry | None) -> dict[str, Any]:
    try:
        value = schemaless_reader(
            io.BytesIO(body),
            entry.parsed,
            reader.parsed if reader is not None else None,
            return_record_name=True,
            return_record_name_override=True,
        )
    except Exception as exc:
        raise CodecError("undecodable", f"{entry.name}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(value, dict):
        raise CodecError("undecodable", f"{entry.name}: not a record")
    return value


def _split(data: bytes, reg: Registry, max_bytes: int) -> tuple[SchemaEntry, bytes]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError("not_bytes", type(data).__name__)
    if len(data) > max_bytes:
        raise CodecError("too_large", f"{len(data)} > {max_bytes} bytes")
    if len(data) < HEADER_BYTES:
        raise CodecError("truncated", "shorter than the single-object header")
    data = bytes(data)
    if data[:2] != MAGIC:
        raise CodecError("bad_magic", data[:2].hex())
    return reg.by_fingerprint(int.from_bytes(data[2:HEADER_BYTES], "little")), data[HEADER_BYTES:]


def decode(
    data: bytes,
    expected: str | None = None,
    *,
    reg: Registry | None = None,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> tuple[str, dict[str, Any]]:
    """Decode a single-object message; returns ``(full schema name, record)``.

    With ``expected``, a message written by any other schema is refused.
    """
    reg = reg or registry()
    entry, body = _split(data, reg, max_bytes)
    if expected is not None and entry.name != reg.by_name(expected).name:
        raise CodecError("unexpected_schema", f"{entry.name}, expected {expected}")
    return entry.name, _read(entry, body, None)


def decode_as(
    data: bytes,
    reader_schema_name: str,
    *,
    reg: Registry | None = None,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> dict[str, Any]:
    """Decode a message written by any known version and resolve it to the reader schema."""
    reg = reg or registry()
    writer, body = _split(data, reg, max_bytes)
    reader = reg.by_name(reader_schema_name)
    if writer.name != reader.name:
        raise CodecError("unexpected_schema", f"{writer.name}, expected {reader.name}")
    return _read(writer, body, reader)


def decode_canonical(
    schema_name: str, body: bytes, *, reg: Registry | None = None, certified: bool = False
) -> dict[str, Any]:
    """Decode canonical bytes (a bare body) of a known schema. ``certified``: the caller
    checked the SHA-256 of ``body`` against a quorum-certified hash, so these are bytes this
    encoder wrote, and the structural check is skipped (fastavro's errors still become
    :class:`~schemas.errors.CodecError`)."""
    if len(body) > MAX_MESSAGE_BYTES:
        raise CodecError("too_large", f"{len(body)} bytes")
    entry = (reg or registry()).by_name(schema_name)
    return (_unchecked_read if certified else _read)(entry, bytes(body), None)


def registry_dir() -> Path:
    """The directory holding this package's ``*.avsc`` files."""
    return SCHEMA_DIR
