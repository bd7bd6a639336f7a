"""Schema registry: every ``*.avsc`` of this package, by full name and by fingerprint.

Theory of operation
-------------------
* Each ``*.avsc`` file defines exactly one named type (record or enum) in namespace
  ``pantheon``; other named types are referenced by their full name (``pantheon.X``).
* For every named type the registry builds a self-contained schema by inlining each
  referenced type at its first use (later uses stay references), parses it with fastavro, and
  computes its Parsing Canonical Form (PCF) and the CRC-64-AVRO fingerprint of the PCF, as the
  Avro specification defines them. The fingerprint identifies the writer schema in
  single-object encoding, so any reader (in any language) can tell which schema wrote a record.
* Old versions of a schema can be added with :meth:`Registry.add` (schema evolution): records
  they wrote stay decodable by fingerprint and can be read with the current reader schema.
* ``retired/*.avsc`` hold earlier definitions of named types (``RotateKey.v1.avsc``: before
  ``new_key_proof``, D61; ``AddOperator``, ``ProposeMember``, ``RegisterIdentity``
  ``.v1.avsc``: before their keys' proofs, D63). ``retired/generations.json`` lists the
  writer generations: which retired definitions were current together (before D61 all four,
  from D61 to D63 the last three). :meth:`Registry.from_directory` registers, by
  fingerprint, the writer version that every current schema had in each generation (an
  earlier ``RotateKey`` also gives earlier ``TxBody`` and ``TxEnvelope`` fingerprints), so
  messages written before a change still decode, exactly as they were written.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import to_parsing_canonical_form

from schemas.errors import CodecError

NAMESPACE = "pantheon"
SCHEMA_DIR = Path(__file__).resolve().parent

_CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return tuple(table)


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO ("Rabin") fingerprint of ``data``, per the Avro specification."""
    fp = _CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _CRC64_TABLE[(fp ^ byte) & 0xFF]
    return fp


@dataclass(frozen=True, slots=True, kw_only=True)
class SchemaEntry:
    """One writer/reader schema: its name, the expanded JSON, fastavro's parse and PCF."""

    name: str
    expanded: Any
    parsed: Any
    canonical_form: str
    fingerprint: int

    @property
    def fingerprint_bytes(self) -> bytes:
        """The 8-byte little-endian fingerprint used in single-object encoding."""
        return self.fingerprint.to_bytes(8, "little")


def _fullname(name: str) -> str:
    return name if "." in name else f"{NAMESPACE}.{name}"


def _expand(node: Any, defs: Mapping[str, Any], seen: set[str]) -> Any:
    """Inline named references at first use, so the schema is self-contained."""
    if isinstance(node, str):
        full = _fullname(node) if node in defs or _fullname(node) in defs else node
        if full in defs:
            if full in seen:
                return full
            seen.add(full)
            return _expand(copy.deepcopy(defs[full]), defs, seen)
        return node
    if isinstance(node, list):
        return [_expand(branch, defs, seen) for branch in node]
    if isinstance(node, dict):
        kind = node.get("type")
        if kind in ("record", "error"):
            seen.add(
                _fullname(node["name"])
                if "namespace" not in node
                else f"{node['namespace']}.{node['name']}"
            )
            out = dict(node)
            out["fields"] = [
                {**field, "type": _expand(field["type"], defs, seen)} for field in node["fields"]
            ]
            return out
        if kind == "array":
            return {**node, "items": _expand(node["items"], defs, seen)}
        if kind == "map":
            return {**node, "values": _expand(node["values"], defs, seen)}
        if kind in ("enum", "fixed"):
            seen.add(f"{node.get('namespace', NAMESPACE)}.{node['name']}")
            return node
        if isinstance(kind, str | list | dict):
            return {**node, "type": _expand(kind, defs, seen)}
    return node


class Registry:
    """Schemas by full name (current versions) and by fingerprint (every known writer)."""

    def __init__(self, definitions: Mapping[str, Any]) -> None:
        self._defs = dict(definitions)
        self._by_name: dict[str, SchemaEntry] = {}
        self._by_fingerprint: dict[int, SchemaEntry] = {}
        for name in sorted(self._defs):
            entry = self._build(name, self._defs)
            self._by_name[name] = entry
            self._by_fingerprint[entry.fingerprint] = entry

    @classmethod
    def from_directory(cls, directory: Path = SCHEMA_DIR) -> Registry:
        """Load every ``*.avsc`` of ``directory`` (one named type per file)."""
        defs: dict[str, Any] = {}
        for path in sorted(directory.glob("*.avsc")):
            schema = json.loads(path.read_text(encoding="utf-8"))
            defs[f"{schema.get('namespace', NAMESPACE)}.{schema['name']}"] = schema
        registry = cls(defs)
        retired = directory / "retired"
        manifest = retired / "generations.json"
        if manifest.exists():
            for generation in json.loads(manifest.read_text(encoding="utf-8"))["generations"]:
                registry.add_retired(
                    *(
                        json.loads((retired / name).read_text(encoding="utf-8"))
                        for name in generation["retired"]
                    )
                )
        return registry

    @staticmethod
    def _build(name: str, defs: Mapping[str, Any]) -> SchemaEntry:
        try:
            expanded = _expand(name, defs, set())
            parsed = parse_schema(copy.deepcopy(expanded), _force=True)
            pcf = to_parsing_canonical_form(parsed)
        except Exception as exc:
            raise CodecError("bad_schema", f"{name}: {exc}") from exc
        return SchemaEntry(
            name=name,
            expanded=expanded,
            parsed=parsed,
            canonical_form=pcf,
            fingerprint=crc64_avro(pcf.encode("utf-8")),
        )

    def add(self, schema: Mapping[str, Any]) -> SchemaEntry:
        """Register another (e.g. older) writer version of a schema, by fingerprint only."""
        name = f"{schema.get('namespace', NAMESPACE)}.{schema['name']}"
        defs = {**self._defs, name: dict(schema)}
        entry = self._build(name, defs)
        self._by_fingerprint.setdefault(entry.fingerprint, entry)
        return entry

    def add_retired(self, *schemas: Mapping[str, Any]) -> list[SchemaEntry]:
        """Register, by fingerprint only, the writer version that each current schema had
        when the named types of ``schemas`` were defined so (together); returns the versions
        added."""
        defs = dict(self._defs)
        for schema in schemas:
            defs[f"{schema.get('namespace', NAMESPACE)}.{schema['name']}"] = dict(schema)
        added = []
        for current in sorted(self._defs):
            entry = self._build(current, defs)
            if entry.fingerprint != self._by_name[current].fingerprint:
                self._by_fingerprint.setdefault(entry.fingerprint, entry)
                added.append(entry)
        return added

    def by_name(self, name: str) -> SchemaEntry:
        """The current schema called ``name`` (short or full name)."""
        entry = self._by_name.get(_fullname(name))
        if entry is None:
            raise CodecError("unknown_schema", name)
        return entry

    def by_fingerprint(self, fingerprint: int) -> SchemaEntry:
        """The writer schema with this fingerprint."""
        entry = self._by_fingerprint.get(fingerprint)
        if entry is None:
            raise CodecError("unknown_fingerprint", f"{fingerprint:016x}")
        return entry

    def names(self) -> Iterator[str]:
        """Full names of the current schemas."""
        return iter(sorted(self._by_name))
