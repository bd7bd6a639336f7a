"""Genesis: chain parameters, founding institutions, and the state and hash they define.

Theory of operation
-------------------
* A :class:`Genesis` document lists the chain parameters and the founding institutions
  (sorted by id) with their governance and operator public keys. Its hash (SHA-256 of its
  canonical bytes) is the ``prev_hash`` of block 1.
* :func:`genesis_writes` turns it into the write set committed as height 0: the parameters,
  one record per institution (member from height 1) and one per key. The state root of height
  0 is therefore ``H(zero32 || H(genesis write set))``.
* Building a genesis is pure: the ``pantheon genesis`` shell draws seeds, calls
  :func:`plan_consortium`, writes the keystore (0600) and the document.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from ledger.context import is_slug
from ledger.errors import DecodeError, InvalidEvent
from ledger.hashing import canonical_bytes, sha256
from ledger.keys import PUBLIC_KEY_BYTES, KeyPair
from ledger.members import inst_key, key_key
from ledger.state import Overlay, WorldState, WriteSet
from schemas.codec import decode, encode
from schemas.errors import CodecError


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainParams:
    """Chain parameters (the ``ChainParams`` record)."""

    chain_id: str
    max_block_txs: int = 500
    max_block_bytes: int = 1 << 20
    block_interval_ms: int = 1000
    max_tx_bytes: int = 64 * 1024
    proposal_ttl_blocks: int = 1000
    threshold_num: int = 2
    threshold_den: int = 3

    def __post_init__(self) -> None:
        if not is_slug(self.chain_id):
            raise InvalidEvent(f"chain id {self.chain_id!r} is not a slug")
        if (
            min(
                self.max_block_txs,
                self.max_block_bytes,
                self.block_interval_ms,
                self.max_tx_bytes,
                self.proposal_ttl_blocks,
            )
            < 1
        ):
            raise InvalidEvent("block, size, interval and ttl limits must be positive")
        if not 0 < self.threshold_num < self.threshold_den:
            raise InvalidEvent("threshold must be a fraction strictly between 0 and 1")

    def record(self) -> dict[str, Any]:
        """The ``ChainParams`` record."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ChainParams:
        """Build from a ``ChainParams`` record."""
        return cls(**dict(record))


@dataclass(frozen=True, slots=True, kw_only=True)
class Founder:
    """A founding institution and its public keys."""

    institution_id: str
    governance_public_key: bytes
    operator_public_keys: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if not is_slug(self.institution_id):
            raise InvalidEvent(f"institution id {self.institution_id!r} is not a slug")
        keys = (self.governance_public_key, *self.operator_public_keys)
        if any(len(k) != PUBLIC_KEY_BYTES for k in keys) or len(set(keys)) != len(keys):
            raise InvalidEvent("keys must be distinct 32-byte Ed25519 public keys")


@dataclass(frozen=True, slots=True, kw_only=True)
class Genesis:
    """The genesis document."""

    params: ChainParams
    founders: tuple[Founder, ...]
    _hash: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = [f.institution_id for f in self.founders]
        if not ids or ids != sorted(set(ids)):
            raise InvalidEvent("founders must be non-empty, unique and sorted by id")
        keys = [
            k for f in self.founders for k in (f.governance_public_key, *f.operator_public_keys)
        ]
        if len(set(keys)) != len(keys):
            raise InvalidEvent("a key appears twice in the genesis")
        object.__setattr__(self, "_hash", sha256(canonical_bytes("GenesisDocument", self.record())))

    def record(self) -> dict[str, Any]:
        """The ``GenesisDocument`` record."""
        return {
            "params": self.params.record(),
            "institutions": [
                {
                    "institution_id": f.institution_id,
                    "governance_public_key": f.governance_public_key,
                    "operator_public_keys": list(f.operator_public_keys),
                }
                for f in self.founders
            ],
        }

    def hash(self) -> bytes:
        """The genesis hash (``prev_hash`` of block 1)."""
        return self._hash

    def encode(self) -> bytes:
        """Single-object bytes of the document (what ``pantheon genesis`` writes)."""
        return encode("GenesisDocument", self.record())

    @classmethod
    def decode(cls, raw: bytes) -> Genesis:
        """Decode a genesis document written by :meth:`encode`."""
        try:
            _, record = decode(raw, "GenesisDocument")
            return cls.from_record(record)
        except (CodecError, TypeError) as exc:
            raise DecodeError(str(exc)) from exc

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Genesis:
        """Build from a ``GenesisDocument`` record."""
        return cls(
            params=ChainParams.from_record(record["params"]),
            founders=tuple(
                Founder(
                    institution_id=i["institution_id"],
                    governance_public_key=i["governance_public_key"],
                    operator_public_keys=tuple(i["operator_public_keys"]),
                )
                for i in record["institutions"]
            ),
        )


def genesis_writes(genesis: Genesis) -> WriteSet:
    """The write set committed as height 0."""
    view = Overlay(WorldState())
    view.put("params", genesis.params.record())
    for f in genesis.founders:
        keys = [(f.governance_public_key, "GOVERNANCE")]
        keys += [(k, "OPERATOR") for k in f.operator_public_keys]
        for public_key, role in keys:
            kid = sha256(public_key)
            view.put(
                key_key(kid),
                {
                    "key_id": kid,
                    "public_key": public_key,
                    "role": role,
                    "institution_id": f.institution_id,
                    "label": role.lower(),
                    "active": True,
                    "next_nonce": 0,
                },
            )
        view.put(
            inst_key(f.institution_id),
            {
                "institution_id": f.institution_id,
                "governance_key_id": sha256(f.governance_public_key),
                "operator_key_ids": sorted(sha256(k) for k in f.operator_public_keys),
                "status": "ACTIVE",
                "effective_height": 1,
            },
        )
    return view.write_set()


def genesis_state(genesis: Genesis) -> WorldState:
    """A fresh world state with the genesis committed at height 0."""
    state = WorldState()
    state.commit(genesis_writes(genesis), height=0)
    return state


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsortiumPlan:
    """A genesis and the key pairs it names: ``keys[institution] = (governance, operators)``."""

    genesis: Genesis
    keys: Mapping[str, tuple[KeyPair, tuple[KeyPair, ...]]]

    def keystore(self, institution_id: str) -> dict[str, Any]:
        """What the CLI writes (mode 0600) for one institution: hex seeds and public facts."""
        gov, operators = self.keys[institution_id]
        return {
            "institution_id": institution_id,
            "chain_id": self.genesis.params.chain_id,
            "genesis_hash": self.genesis.hash().hex(),
            "governance": {**gov.describe(), "seed": gov.seed.hex()},
            "operators": [{**op.describe(), "seed": op.seed.hex()} for op in operators],
        }


def plan_consortium(
    chain_id: str,
    institution_ids: Sequence[str],
    seeds: Sequence[bytes],
    *,
    operators_per_institution: int = 1,
    **params: int,
) -> ConsortiumPlan:
    """Genesis for the given institutions; needs ``(1 + operators) * n`` 32-byte seeds."""
    per = 1 + operators_per_institution
    if len(seeds) != per * len(institution_ids):
        raise InvalidEvent(f"need {per * len(institution_ids)} seeds, got {len(seeds)}")
    keys: dict[str, tuple[KeyPair, tuple[KeyPair, ...]]] = {}
    for i, inst in enumerate(sorted(institution_ids)):
        pairs = [KeyPair.from_seed(s) for s in seeds[i * per : (i + 1) * per]]
        keys[inst] = (pairs[0], tuple(pairs[1:]))
    founders = tuple(
        Founder(
            institution_id=inst,
            governance_public_key=gov.public_key,
            operator_public_keys=tuple(o.public_key for o in ops),
        )
        for inst, (gov, ops) in keys.items()
    )
    genesis = Genesis(params=ChainParams(chain_id=chain_id, **params), founders=founders)
    return ConsortiumPlan(genesis=genesis, keys=keys)
