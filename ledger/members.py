"""Membership rules shared by the contracts, execution and finality.

Theory of operation
-------------------
* An institution record carries a status and the height from which it applies
  (``effective_height``). A change applied by block ``h`` has ``effective_height = h + 1``, so
  membership changes take effect from the next block (DESIGN.md section 4.7):
  an institution is a member at height ``h`` iff (ACTIVE and effective_height <= h) or
  (REMOVED and effective_height > h).
* The validator set of height ``h`` is the member institutions at ``h`` with their operator
  key ids, sorted; ``n`` counts institutions, never operators, and the quorum is
  ``floor(2n/3) + 1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ledger.hashing import hash_record
from ledger.state import Record


class StateView(Protocol):
    """Read access shared by :class:`~ledger.state.WorldState` and overlays."""

    def get(self, key: str) -> Record | None: ...

    def institution_ids(self) -> list[str]: ...


def inst_key(institution_id: str) -> str:
    """State key of an institution."""
    return f"inst/{institution_id}"


def key_key(kid: bytes) -> str:
    """State key of a key record."""
    return f"key/{kid.hex()}"


def is_member(inst: Record | None, height: int) -> bool:
    """Whether an institution record makes its institution a member at ``height``."""
    if inst is None:
        return False
    if inst["status"] == "ACTIVE":
        return bool(inst["effective_height"] <= height)
    return bool(inst["effective_height"] > height)


def member_ids(view: StateView, height: int) -> list[str]:
    """Member institution ids at ``height``, sorted."""
    return [i for i in view.institution_ids() if is_member(view.get(inst_key(i)), height)]


def quorum(n: int) -> int:
    """``floor(2n/3) + 1``: votes of distinct institutions needed to finalize."""
    return (2 * n) // 3 + 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidatorSet:
    """Who may finalize height ``height``: institution -> operator key id -> public key."""

    height: int
    members: Mapping[str, Mapping[bytes, bytes]]

    @property
    def size(self) -> int:
        """``n``, the number of member institutions."""
        return len(self.members)

    @property
    def quorum(self) -> int:
        """``floor(2n/3) + 1``."""
        return quorum(self.size)

    def institution_of(self, operator_key_id: bytes) -> str | None:
        """The institution whose operator ``operator_key_id`` is, if any."""
        for inst, operators in self.members.items():
            if operator_key_id in operators:
                return inst
        return None

    def record(self) -> dict[str, Any]:
        """The canonical ``ValidatorSet`` record (sorted)."""
        return {
            "height": self.height,
            "members": [
                {"institution_id": i, "operator_key_ids": sorted(self.members[i])}
                for i in sorted(self.members)
            ],
        }

    def hash(self) -> bytes:
        """``validator_set_hash`` of block headers."""
        return hash_record("ValidatorSet", self.record())


def validator_set(view: StateView, height: int) -> ValidatorSet:
    """The validator set of ``height`` from the state after block ``height - 1``."""
    members: dict[str, dict[bytes, bytes]] = {}
    for inst_id in member_ids(view, height):
        inst = view.get(inst_key(inst_id))
        assert inst is not None
        operators: dict[bytes, bytes] = {}
        for kid in inst["operator_key_ids"]:
            key = view.get(key_key(kid))
            if key is not None and key["active"]:
                operators[kid] = key["public_key"]
        members[inst_id] = operators
    return ValidatorSet(height=height, members=members)
