"""Following a chain from its logs: one rule for every reader (projector, audit, tests).

Theory of operation
-------------------
* A reader of the ``tx`` log cuts it with :class:`~ledger.cutter.Cutter` and executes each cut
  block with :class:`~ledger.execution.LedgerMachine`, exactly as validators do
  (:class:`ChainFollower`). It believes nothing published about a block
  before it has checked it against that execution.
* A ``FinalizedBlock`` copy of height ``h`` is judged in two steps, the same for every
  reader. :func:`check_copy` is the certificate: the copy decodes, its results match its
  ``tx_root``, its header names the validator set of ``h`` (members after ``h - 1``) and a
  quorum of distinct member institutions signed the header's hash. A copy that fails is
  :class:`Rejected` with the reason. :func:`compare` is the replay: the fields of a
  :class:`Certified` copy's header and its results that differ from the executed block.
* The **canonical** copy of ``h`` is the first copy, in log order, that is certified and
  matches the replay (:func:`canonical`). A certified copy that differs means a quorum signed
  a block that the core does not compute: the projector stops on it, the audit reports it.
  Other certified copies with other bytes are variants (for example another certificate).
* Nothing here does I/O: the callers read the logs and act on the verdicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ledger.blocks import BlockHeader, EntryResult, decode_finalized
from ledger.cutter import CutBlock, Cutter
from ledger.errors import DecodeError, ProofError
from ledger.execution import ExecutedBlock, LedgerMachine
from ledger.finality import QuorumCertificate, verify_finalized
from ledger.genesis import Genesis
from ledger.members import ValidatorSet

Decoded = tuple[BlockHeader, dict[str, Any], tuple[EntryResult, ...]]
HEADER_FIELDS = (
    "height",
    "prev_hash",
    "first_offset",
    "last_offset",
    "tx_root",
    "state_root",
    "validator_set_hash",
    "timestamp_ms",
)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A copy without a valid quorum certificate for its height (or that does not decode)."""

    offset: int
    raw: bytes
    reason: str
    header: BlockHeader | None = None


@dataclass(frozen=True, slots=True)
class Certified:
    """A copy whose certificate a quorum of the height's validator set signed."""

    offset: int
    raw: bytes
    header: BlockHeader
    certificate: QuorumCertificate
    results: tuple[EntryResult, ...]


Verdict = Rejected | Certified


@dataclass(frozen=True, slots=True)
class Mismatch:
    """How a certified copy differs from the replay: header fields (name -> (replayed, copy))
    and the positions of differing results (empty when they agree)."""

    header: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    positions: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.header or self.positions)

    def describe(self) -> str:
        """One line for a log or an exception."""
        parts = []
        if self.header:
            parts.append("header fields " + ", ".join(self.header))
        if self.positions:
            parts.append(f"results from position {self.positions[0]}")
        return "; ".join(parts) or "nothing"


def check_copy(
    offset: int, raw: bytes, validators: ValidatorSet, decoded: Decoded | None = None
) -> Verdict:
    """The certificate step for the copy ``raw`` at ``offset`` of the ``blocks`` log, against
    the validator set of its height. ``decoded``: :func:`~ledger.blocks.decode_finalized` of
    these very bytes, when the caller has it."""
    try:
        if decoded is None:
            decoded = decode_finalized(raw)
        header, cert, results = verify_finalized(raw, validators, decoded=decoded)
    except (DecodeError, ProofError) as exc:
        return Rejected(offset, raw, str(exc), decoded[0] if decoded is not None else None)
    return Certified(offset, raw, header, cert, results)


def header_mismatch(expected: BlockHeader, got: BlockHeader | None) -> dict[str, tuple[Any, Any]]:
    """Header fields of ``got`` that differ from ``expected``: name -> (expected, got)
    (nothing for a copy that did not decode)."""
    if got is None:
        return {}
    pairs = ((name, getattr(expected, name), getattr(got, name)) for name in HEADER_FIELDS)
    return {name: (a, b) for name, a, b in pairs if a != b}


def compare(executed: ExecutedBlock, copy: Certified) -> Mismatch:
    """The replay step: what of ``copy`` differs from the block the core executed. The
    header's hash binds the results (through ``tx_root``, which :func:`check_copy` checked),
    so an equal hash is an exact match and nothing else is compared."""
    if executed.block_hash == copy.certificate.block_hash:
        return Mismatch()
    header = header_mismatch(executed.header, copy.header)
    positions: tuple[int, ...] = ()
    if copy.results != executed.results:
        pairs = zip(copy.results, executed.results, strict=False)
        positions = tuple(i for i, (a, b) in enumerate(pairs) if a != b) or (
            min(len(copy.results), len(executed.results)),
        )
    return Mismatch(header, positions)


def canonical(
    executed: ExecutedBlock, verdicts: Iterable[Verdict]
) -> Iterator[tuple[Verdict, Mismatch | None, bool]]:
    """Each verdict (in log order) with its mismatch (``None`` for a rejected copy) and
    whether it is the canonical copy: the first certified copy that matches the replay."""
    chosen = False
    for verdict in verdicts:
        if isinstance(verdict, Rejected):
            yield verdict, None, False
            continue
        mismatch = compare(executed, verdict)
        is_canonical = not chosen and not mismatch
        chosen = chosen or is_canonical
        yield verdict, mismatch, is_canonical


class ChainFollower:
    """The tx log cut and executed as validators do: feed messages in offset order; each
    completed block comes back executed and committed (:meth:`feed`)."""

    def __init__(self, genesis: Genesis, machine: LedgerMachine | None = None) -> None:
        self.machine = machine if machine is not None else LedgerMachine(genesis)
        params = genesis.params
        self.cutter = Cutter(
            chain_id=params.chain_id,
            next_height=self.machine.height + 1,
            max_block_txs=params.max_block_txs,
            max_block_bytes=params.max_block_bytes,
        )
        self.last_offset = -1
        self._verified: set[bytes] = set()

    @property
    def height(self) -> int:
        """Height of the last executed block."""
        return self.machine.height

    def cut(
        self, offset: int, timestamp_ms: int, raw: bytes, *, signature_verified: bool = False
    ) -> tuple[CutBlock, set[bytes]] | None:
        """Feed one ``tx`` message; a completed cut comes back with the envelopes whose
        signatures the caller vouched for (``signature_verified``, see
        :func:`ledger.execution.execute_block`). The caller executes it."""
        self.last_offset = offset
        if signature_verified:
            self._verified.add(raw)
        block = self.cutter.feed(offset, timestamp_ms, raw)
        if block is None:
            return None
        verified, self._verified = self._verified, set()
        return block, verified

    def feed(self, offset: int, timestamp_ms: int, raw: bytes) -> ExecutedBlock | None:
        """Feed one ``tx`` message; the block it completes, executed and committed."""
        done = self.cut(offset, timestamp_ms, raw)
        return None if done is None else self.machine.apply(done[0])

    @property
    def pending_entries(self) -> int:
        """Entries cut into no block yet."""
        return self.cutter.pending_count
