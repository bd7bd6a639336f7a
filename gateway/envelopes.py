"""What the explorer checks in the browser: envelopes, decoded arguments and block leaves.

Theory of operation
-------------------
* Each lookup is batched through the request's :class:`~gateway.context.Batch` with the
  entries (or blocks) the previous level listed, so a page of transactions costs one
  statement for all their envelopes, whether it asks for ``arguments``, ``envelope`` or both
  (decisions D35, D49).
* ``envelope`` is the stored signed envelope as the validators read it (single-object Avro):
  the explorer hashes its body to the transaction id and decodes governance arguments from
  it, so it trusts nothing the gateway says about them (D49). ``leaves`` are a block's
  ``tx_root`` leaves in entry order, to recompute the root the certificate signs.
* Governance operations that change who may certify blocks are listed by
  :data:`KEY_SET_OPERATIONS`; the explorer replays their accepted entries from the genesis.
"""

from __future__ import annotations

from typing import Any

from gateway.context import RequestContext
from ledger.tx import TxRejected, parse_tx
from projections import read
from projections.read import queries

#: operations whose accepted entries can change the validator set or its keys (D49)
KEY_SET_OPERATIONS = (
    "ProposeMember",
    "ProposeRemoval",
    "CastVote",
    "AddOperator",
    "RemoveOperator",
    "RotateKey",
)


def plain(value: Any) -> Any:
    """A decoded Avro value as JSON: bytes as lowercase hex, containers recursively."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def envelope_of(context: RequestContext, tx: read.Transaction) -> bytes | None:
    """The stored envelope of ``tx``, fetched with those of every listed entry."""
    siblings = ((t.height, t.position) for t in context.listed.get("Transaction", ()))
    batch = context.batch("envelopes", queries.envelopes_of)
    found: bytes | None = batch.get(context.conn(), (tx.height, tx.position), siblings)
    return found


def arguments_of(context: RequestContext, tx: read.Transaction) -> dict[str, Any] | None:
    """The decoded arguments of ``tx`` (bytes as hex); None if the entry did not decode."""
    raw = envelope_of(context, tx)
    return None if raw is None else decoded_arguments(raw)


def decoded_arguments(raw: bytes) -> dict[str, Any] | None:
    """The decoded arguments of a stored envelope (bytes as hex); None if it does not decode
    (both read paths use this: D65)."""
    try:  # the signature was checked when the block was made (the sender is set)
        parsed = parse_tx(raw, signature_verified=True)
    except TxRejected:
        return None
    decoded: dict[str, Any] = plain(parsed.args)
    return decoded


def leaves_of(context: RequestContext, block: read.Block) -> list[str]:
    """The block's ``tx_root`` leaves as hex, fetched with those of every listed block."""
    siblings = (b.height for b in context.listed.get("Block", ()))
    batch = context.batch("leaves", queries.leaves_of)
    leaves: list[bytes] = batch.get(context.conn(), block.height, siblings) or []
    return [leaf.hex() for leaf in leaves]
