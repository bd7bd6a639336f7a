"""The world state: a deterministic key -> record store, its write sets and its state root.

Theory of operation
-------------------
* Keys are strings with a prefix per kind (``inst/<id>``, ``key/<hex key id>``,
  ``prop/<hex id>``, ``anchor/<id>``, ``batch/<id>``, ``asset/<id>``,
  ``evidence/<hex key id>/<height>``, ``params``). A value is a record of the state schema
  named by :data:`SCHEMA_BY_PREFIX`; records are treated as immutable (contracts build new
  dicts, never mutate), so sharing them between state and overlays is safe.
* Execution never mutates a :class:`WorldState`: it writes into an :class:`Overlay` (one per
  block, and one per transaction on top of it, discarded if the transaction is rejected), and
  the resulting :class:`WriteSet` is committed with :meth:`WorldState.commit`.
* ``state_root(h) = SHA-256(state_root(h-1) || SHA-256(canonical WriteSet))`` where the write
  set lists every written key once, sorted by key (byte order of UTF-8), a deleted key with a
  null value. The root before genesis is 32 zero bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ledger.errors import DecodeError, StateError
from ledger.hashing import canonical_bytes, sha256
from schemas.codec import decode_canonical
from schemas.errors import CodecError

Record = Mapping[str, Any]

SCHEMA_BY_PREFIX = {
    "params": "ChainParams",
    "inst": "InstitutionState",
    "key": "KeyState",
    "prop": "ProposalState",
    "anchor": "AnchorState",
    "batch": "BatchState",
    "asset": "AssetState",
    "evidence": "EvidenceState",
}

_MISSING: Any = object()


def schema_for(key: str) -> str:
    """The state schema of ``key`` (by its prefix)."""
    schema = SCHEMA_BY_PREFIX.get(key.split("/", 1)[0])
    if schema is None:
        raise StateError(f"no state schema for key {key!r}")
    return schema


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteSet:
    """The writes of one block, sorted by key; ``None`` deletes."""

    entries: tuple[tuple[str, Record | None], ...]
    _digest: list[bytes] = field(default_factory=list, compare=False, repr=False)
    """Memo of :meth:`digest` and :meth:`encoded` (records are immutable, so is the write
    set)."""

    def __post_init__(self) -> None:
        keys = [k for k, _ in self.entries]
        if keys != sorted(set(keys), key=lambda k: k.encode()):
            raise StateError("write set keys must be unique and sorted")

    def canonical(self) -> bytes:
        """Canonical bytes of the ``WriteSet`` record."""
        return canonical_bytes(
            "WriteSet",
            {
                "entries": [
                    {"key": k, "value": None if v is None else (f"pantheon.{schema_for(k)}", v)}
                    for k, v in self.entries
                ]
            },
        )

    def digest(self) -> bytes:
        """SHA-256 of the canonical write set (computed once: execution, the machine's commit
        and the final state's commit all need it)."""
        if not self._digest:
            body = self.canonical()
            self._digest.extend((sha256(body), body))
        return self._digest[0]

    def encoded(self) -> bytes:
        """:meth:`canonical`, computed once with :meth:`digest` (a primary sends it to its
        standbys, D52)."""
        self.digest()
        return self._digest[1]

    @classmethod
    def from_canonical(cls, body: bytes, *, certified: bool = False) -> WriteSet:
        """The write set whose canonical bytes are ``body`` (:meth:`canonical` inverted); its
        digest is taken to be the SHA-256 of ``body``, so ``body`` must be checked against a
        certified state root (:func:`root_after`) before the write set is trusted; with
        ``certified`` it was, and the structural wire check is skipped. Bytes that do not
        decode, or keys out of order, are a :class:`~ledger.errors.DecodeError`."""
        try:
            record = decode_canonical("WriteSet", body, certified=certified)
            entries = tuple(
                (str(e["key"]), None if e["value"] is None else e["value"][1])
                for e in record["entries"]
            )
            for key, value in entries:
                if value is not None:
                    schema_for(key)
            writes = cls(entries=entries)
        except (CodecError, StateError, KeyError, TypeError, IndexError) as exc:
            raise DecodeError(f"not a canonical write set: {exc}") from exc
        writes._digest.extend((sha256(body), bytes(body)))
        return writes


def next_state_root(prev_root: bytes, writes: WriteSet) -> bytes:
    """``H(prev_state_root || H(sorted write set))``."""
    return root_after(prev_root, writes.digest())


def root_after(prev_root: bytes, writes_digest: bytes) -> bytes:
    """The state root after a write set whose canonical bytes hash to ``writes_digest``."""
    return sha256(prev_root + writes_digest)


class WorldState:
    """Committed state: records by key, the state root and the last committed height."""

    __slots__ = ("_data", "_institutions", "height", "root")

    def __init__(self) -> None:
        self._data: dict[str, Record] = {}
        self._institutions: set[str] = set()
        self.root = bytes(32)
        self.height = -1

    def get(self, key: str) -> Record | None:
        """The record at ``key``, or None."""
        return self._data.get(key)

    def institution_ids(self) -> list[str]:
        """Ids of every institution ever recorded (members or not), sorted."""
        return sorted(self._institutions)

    def commit(self, writes: WriteSet, *, height: int) -> bytes:
        """Apply a block's write set; heights must follow each other. Returns the new root."""
        if height != self.height + 1:
            raise StateError(f"commit of height {height} after {self.height}")
        for key, value in writes.entries:
            if value is None:
                self._data.pop(key, None)
                self._institutions.discard(key.removeprefix("inst/"))
            else:
                self._data[key] = value
                if key.startswith("inst/"):
                    self._institutions.add(key.removeprefix("inst/"))
        self.root = next_state_root(self.root, writes)
        self.height = height
        return self.root

    def items(self) -> Iterator[tuple[str, Record]]:
        """Every (key, record), sorted by key."""
        for key in sorted(self._data):
            yield key, self._data[key]

    def __len__(self) -> int:
        return len(self._data)

    def copy(self) -> WorldState:
        """A copy that later commits leave unchanged (for a snapshot written meanwhile).
        Records are never changed in place (writes replace them), so they are shared and
        the copy costs one dict copy."""
        other = WorldState()
        other._data = dict(self._data)
        other._institutions = set(self._institutions)
        other.root = self.root
        other.height = self.height
        return other

    @classmethod
    def restore(
        cls, items: Iterator[tuple[str, Record]], *, height: int, root: bytes
    ) -> WorldState:
        """A state rebuilt from a snapshot: its records, height and (trusted) root."""
        if len(root) != 32 or height < 0:
            raise StateError("a restored state needs a 32-byte root and a height >= 0")
        state = cls()
        for key, value in items:
            schema_for(key)
            state._data[key] = value
            if key.startswith("inst/"):
                state._institutions.add(key.removeprefix("inst/"))
        state.root = root
        state.height = height
        return state


class Overlay:
    """Uncommitted writes over a state or another overlay."""

    __slots__ = ("_base", "_writes")

    def __init__(self, base: WorldState | Overlay) -> None:
        self._base = base
        self._writes: dict[str, Record | None] = {}

    def get(self, key: str) -> Record | None:
        """The record at ``key`` as seen through this overlay."""
        value = self._writes.get(key, _MISSING)
        if value is _MISSING:
            return self._base.get(key)
        return value  # type: ignore[no-any-return]

    def put(self, key: str, record: Record) -> None:
        """Write ``record`` at ``key`` (validated against its schema at write-set time)."""
        schema_for(key)
        self._writes[key] = dict(record)

    def delete(self, key: str) -> None:
        """Delete ``key``."""
        self._writes[key] = None

    def institution_ids(self) -> list[str]:
        """Institution ids visible through this overlay, sorted."""
        ids = set(self._base.institution_ids())
        for key, value in self._writes.items():
            if key.startswith("inst/"):
                (ids.add if value is not None else ids.discard)(key.removeprefix("inst/"))
        return sorted(ids)

    def merge_into_base(self) -> None:
        """Fold this overlay's writes into its base overlay (a transaction was accepted)."""
        if not isinstance(self._base, Overlay):
            raise StateError("only an overlay over an overlay can merge")
        self._base._writes.update(self._writes)

    def write_set(self) -> WriteSet:
        """The writes, sorted by key."""
        return WriteSet(entries=tuple(sorted(self._writes.items(), key=lambda kv: kv[0].encode())))
