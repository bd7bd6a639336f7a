"""Block execution: the deterministic state machine entry point.

Theory of operation
-------------------
* :func:`execute_block` is pure: from the committed state after block ``h-1``, the chain
  parameters, ``prev_hash`` and a cut block ``h``, it computes every entry's result, the write
  set, the header and the validator set of ``h`` (members after ``h-1``), writing only to
  overlays. :meth:`LedgerMachine.commit` then applies the write set.
* Each entry is checked in this order, the first failure giving its code: size (TOO_LARGE),
  decoding (MALFORMED), signature (BAD_SIGNATURE), chain id (WRONG_CHAIN), sender known
  (UNKNOWN_SENDER), sender key active and its institution a member at ``h``
  (INACTIVE_SENDER), nonce equal to the sender's next nonce (BAD_NONCE), then the contract's
  role and permission checks. An accepted entry also advances the sender's nonce; a rejected
  one changes nothing (its transaction overlay is dropped) and stays in the block with its code.
* ``verified_signatures`` (default: none) names envelopes, by their raw bytes, whose Ed25519
  signature the caller has already verified (the audit verifies in worker processes with
  :func:`ledger.tx.signature_verifies`); for those only the verify call is skipped, every
  other check runs. The hook trusts its caller: an envelope named there is not re-verified,
  so naming one with a bad signature changes the result (the audit names only envelopes its
  own workers verified). An envelope not named is verified as usual, so an incomplete set
  changes nothing. Validators pass nothing; the audit (its workers' verdicts) and projectors
  (envelopes a quorum certified, :func:`ledger.finality.certified_signatures`) do.
* The signatures of the other envelopes of a block are checked first, all together
  (:func:`ledger.tx.signatures_verify`, one batch equation with the compiled extension, D34);
  those that verify are vouched for as above. One that does not is left to the serial check,
  which finds it bad again and gives it its code: the results are those of checking one by
  one (batch and single verification accept exactly the same signatures).
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import Protocol

from ledger.blocks import BlockHeader, EntryResult, tx_root
from ledger.context import TxContext
from ledger.contracts import run_contract
from ledger.cutter import CutBlock
from ledger.errors import StateError
from ledger.genesis import ChainParams, Genesis, genesis_state
from ledger.members import ValidatorSet, inst_key, is_member, key_key, validator_set
from ledger.results import ResultCode
from ledger.state import Overlay, Record, WorldState, WriteSet, next_state_root
from ledger.tx import Transaction, TxRejected, entry_id, parse_tx, signatures_verify


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutedBlock:
    """A block executed against the state after its parent, not yet committed."""

    header: BlockHeader
    results: tuple[EntryResult, ...]
    writes: WriteSet
    validator_set: ValidatorSet
    #: Each entry's parsed transaction, or None where it was rejected before parsing.
    transactions: tuple[Transaction | None, ...] = ()

    @property
    def block_hash(self) -> bytes:
        """The block hash."""
        return self.header.hash()


def execute_entry(
    block_view: Overlay,
    params: Record,
    height: int,
    raw: bytes,
    *,
    signature_verified: bool = False,
) -> tuple[bytes, ResultCode, Transaction | None]:
    """Execute one entry on ``block_view``; returns ``(tx id, result code, parsed tx)``
    (``None`` for an envelope refused before it parsed).

    ``signature_verified``: the caller vouches for the envelope's signature (see the module).
    """
    try:
        tx = parse_tx(
            raw, max_tx_bytes=int(params["max_tx_bytes"]), signature_verified=signature_verified
        )
    except TxRejected as rejected:
        return rejected.tx_id or entry_id(raw), rejected.code, None
    if tx.chain_id != params["chain_id"]:
        return tx.tx_id, ResultCode.WRONG_CHAIN, tx
    sender = block_view.get(key_key(tx.sender))
    if sender is None:
        return tx.tx_id, ResultCode.UNKNOWN_SENDER, tx
    if not sender["active"] or not is_member(
        block_view.get(inst_key(sender["institution_id"])), height
    ):
        return tx.tx_id, ResultCode.INACTIVE_SENDER, tx
    if tx.nonce != sender["next_nonce"]:
        return tx.tx_id, ResultCode.BAD_NONCE, tx
    view = Overlay(block_view)
    ctx = TxContext(height=height, tx_id=tx.tx_id, sender=sender, params=params)
    code = run_contract(view, ctx, tx.operation, tx.args)
    if code is ResultCode.OK:
        latest = view.get(key_key(tx.sender))
        assert latest is not None
        view.put(key_key(tx.sender), {**latest, "next_nonce": tx.nonce + 1})
        view.merge_into_base()
    return tx.tx_id, code, tx


def execute_block(
    state: WorldState,
    prev_hash: bytes,
    block: CutBlock,
    *,
    verified_signatures: Container[bytes] = frozenset(),
) -> ExecutedBlock:
    """Execute ``block`` on the committed ``state`` (which is not modified).

    ``verified_signatures``: raw envelopes whose signature the caller vouches for (see the
    module); the result is the same as without them when the caller is right.
    """
    if block.height != state.height + 1:
        raise StateError(f"block {block.height} on state at height {state.height}")
    params = state.get("params")
    if params is None:
        raise StateError("state has no chain parameters (no genesis)")
    validators = validator_set(state, block.height)
    unchecked = [entry.raw for entry in block.entries if entry.raw not in verified_signatures]
    batch_verified = {
        raw for raw, ok in zip(unchecked, signatures_verify(unchecked), strict=True) if ok
    }
    view = Overlay(state)
    results, transactions = [], []
    for entry in block.entries:
        tx_id, code, tx = execute_entry(
            view,
            params,
            block.height,
            entry.raw,
            signature_verified=entry.raw in batch_verified or entry.raw in verified_signatures,
        )
        results.append(EntryResult(tx_id=tx_id, offset=entry.offset, code=code))
        transactions.append(tx)
    writes = view.write_set()
    root = next_state_root(state.root, writes)
    return ExecutedBlock(
        header=block_header(block, prev_hash, results, root, validators),
        results=tuple(results),
        writes=writes,
        validator_set=validators,
        transactions=tuple(transactions),
    )


class BlockSpan(Protocol):
    """What a header takes from a cut block (a standby's feed has the same, D57)."""

    @property
    def height(self) -> int: ...
    @property
    def first_offset(self) -> int: ...
    @property
    def last_offset(self) -> int: ...
    @property
    def timestamp_ms(self) -> int: ...


def block_header(
    block: BlockSpan,
    prev_hash: bytes,
    results: Sequence[EntryResult],
    state_root: bytes,
    validators: ValidatorSet,
) -> BlockHeader:
    """The header of ``block`` with these results, state root and validator set."""
    return BlockHeader(
        height=block.height,
        prev_hash=prev_hash,
        first_offset=block.first_offset,
        last_offset=block.last_offset,
        tx_root=tx_root(results),
        state_root=state_root,
        validator_set_hash=validators.hash(),
        timestamp_ms=block.timestamp_ms,
    )


class LedgerMachine:
    """The chain as one validator sees it: state, last block hash, and execution.

    ``execute`` is pure; ``commit`` applies an executed block (the shell commits its own
    execution, then compares its hash with the finalized one).
    """

    def __init__(self, genesis: Genesis) -> None:
        self.genesis = genesis
        self.params: ChainParams = genesis.params
        self.state = genesis_state(genesis)
        self.last_hash = genesis.hash()

    @classmethod
    def resume(cls, genesis: Genesis, state: WorldState, last_hash: bytes) -> LedgerMachine:
        """A machine continuing from a snapshot: ``state`` after the block ``last_hash``."""
        machine = cls(genesis)
        machine.state = state
        machine.last_hash = last_hash
        return machine

    @property
    def height(self) -> int:
        """Height of the last committed block (0 = genesis)."""
        return self.state.height

    def validator_set(self) -> ValidatorSet:
        """The validator set of the next height."""
        return validator_set(self.state, self.state.height + 1)

    def execute(
        self, block: CutBlock, *, verified_signatures: Container[bytes] = frozenset()
    ) -> ExecutedBlock:
        """Execute the next block without committing it (``verified_signatures``: see
        :func:`execute_block`)."""
        return execute_block(
            self.state, self.last_hash, block, verified_signatures=verified_signatures
        )

    def commit(self, executed: ExecutedBlock) -> None:
        """Commit an executed block (must be the next height, built on the last hash)."""
        if executed.header.prev_hash != self.last_hash:
            raise StateError("block does not extend the last committed block")
        root = self.state.commit(executed.writes, height=executed.header.height)
        if root != executed.header.state_root:
            raise StateError("state root mismatch on commit")
        self.last_hash = executed.block_hash

    def apply(
        self, block: CutBlock, *, verified_signatures: Container[bytes] = frozenset()
    ) -> ExecutedBlock:
        """Execute and commit the next block."""
        executed = self.execute(block, verified_signatures=verified_signatures)
        self.commit(executed)
        return executed
