"""Which key activations the certified chain backs: the entries that registered each key.

Theory of operation
-------------------
* ``chain.key_activity`` (D21) says when each key became active, for which institution and
  with which role. A reader that does not trust the database believes a row that activates a
  key only if a certified block at that very height holds an OK entry that registered exactly
  that public key, for that institution, with that role (D75). :class:`KeyBacking` is fed,
  in height order, the transactions of certified OK entries (their body hashed to the
  certified ``tx_id``) and remembers the activations they imply:

  - the genesis' keys, at height 0 (:func:`ledger.genesis.genesis_writes`);
  - ``RegisterIdentity``: the key is the sender's institution's, with role ``kind``. The
    institution is not in the envelope, but the registration proof (D63) is the new key's
    signature binding chain, operation, role and institution; the validators gave OK only if
    it verified for the sender's institution, so the one institution it verifies for is
    that institution. Candidates are the sender's institution when known, then any name
    the caller offers (an untrusted list is fine: the proof decides);
  - ``RotateKey``: the new key takes the old key's institution and role
    (:func:`ledger.contracts.rotate_key`), so it is backed when the old key was; the old
    key is deactivated at that height;
  - ``RevokeIdentity``: the key named is deactivated at that height.

* Deactivations are backed too, and readers take a key's whole history from the backed
  rows alone (:meth:`KeyBacking.rows_of`), never from the table: an inserted deactivation
  would otherwise make every later event of a genuine key ``stale`` on a fresh reader, and
  so forget the disables and revocations it carried (a rollback by database write alone).

* Keys added otherwise (``AddOperator``, an admitted institution's keys) are not backed:
  they are never IAM signers (only SERVICE keys are, and those come from the two
  operations above or the genesis). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger.genesis import Genesis, genesis_writes
from ledger.hashing import sha256
from ledger.iam_events import key_activity
from ledger.key_proofs import registration_proof_valid
from ledger.tx import Transaction

BACKING_OPERATIONS = ("RegisterIdentity", "RotateKey", "RevokeIdentity")
"""The operations whose OK entries activate a key a reader may need backed."""

Row = tuple[bytes, int, str, str, bool, bytes]
"""A ``chain.key_activity`` row: key id, height, institution, role, active, public key."""


def as_row(values: Sequence[Any]) -> Row:
    """A database row as plain Python values."""
    kid, height, inst, role, active, public_key = values
    return (bytes(kid), int(height), str(inst), str(role), bool(active), bytes(public_key))


@dataclass(slots=True)
class KeyBacking:
    """The activations backed by certified entries, fed block by block in height order."""

    chain_id: str
    #: key id -> (institution, role, public key) of every key a backed row activated
    _keys: dict[bytes, tuple[str, str, bytes]] = field(default_factory=dict)
    _backed: set[Row] = field(default_factory=set)
    _history: dict[bytes, list[Row]] = field(default_factory=dict)

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> KeyBacking:
        """Backing with the genesis' keys, active from height 0."""
        backing = cls(genesis.params.chain_id)
        for values in key_activity(genesis_writes(genesis), 0, lambda _key: None):
            row = as_row(values)
            if row[4]:
                backing._add(row)
        return backing

    def _add(self, row: Row) -> None:
        if row in self._backed:
            return
        self._backed.add(row)
        self._history.setdefault(row[0], []).append(row)
        if row[4]:
            self._keys[row[0]] = (row[2], row[3], row[5])

    def _deactivate(self, kid: bytes, height: int) -> None:
        known = self._keys.get(kid)
        if known is not None:
            self._add((kid, height, known[0], known[1], False, known[2]))

    def add(self, tx: Transaction, height: int, institutions: Iterable[str] = ()) -> None:
        """Learn from ``tx``, an OK entry of the certified block at ``height`` (the caller
        checked that its body hashes to the entry's certified ``tx_id``)."""
        if tx.chain_id != self.chain_id:
            return
        args = tx.args
        if tx.operation == "RegisterIdentity":
            public_key, kind = bytes(args["public_key"]), str(args["kind"])
            sender = self._keys.get(tx.sender)
            names = [sender[0]] if sender is not None else []
            for inst in [*names, *(i for i in institutions if i not in names)]:
                if registration_proof_valid(
                    args.get("key_proof", b""),
                    chain_id=self.chain_id,
                    operation="RegisterIdentity",
                    role=kind,
                    institution_id=inst,
                    public_key=public_key,
                    args=args,
                ):
                    self._add((sha256(public_key), height, inst, kind, True, public_key))
                    return
        elif tx.operation == "RotateKey":
            old = self._keys.get(bytes(args["key_id"]))
            if old is not None:
                public_key = bytes(args["new_public_key"])
                self._deactivate(bytes(args["key_id"]), height)
                self._add((sha256(public_key), height, old[0], old[1], True, public_key))
        elif tx.operation == "RevokeIdentity":
            self._deactivate(bytes(args["key_id"]), height)

    def backs(self, row: Row) -> bool:
        """Whether a certified entry (or the genesis) made exactly ``row``."""
        return row in self._backed

    def rows_of(self, key_ids: Iterable[bytes], up_to: int) -> list[Row]:
        """The backed history of ``key_ids`` up to height ``up_to``, in height order."""
        return [r for k in key_ids for r in self._history.get(k, ()) if r[1] <= up_to]


__all__ = ["BACKING_OPERATIONS", "KeyBacking", "Row", "as_row"]
