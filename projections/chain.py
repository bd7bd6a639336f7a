"""The chain projection: final blocks re-executed with the pure core, then written to Postgres.

Theory of operation
-------------------
* Consumes ``<prefix>tx``, ``<prefix>blocks`` and ``<prefix>receipts`` through the generic
  :class:`~projections.runner.ProjectionRunner` (rows and positions in one transaction).
* ``tx`` messages go through a :class:`~ledger.cutter.Cutter`, exactly as validators cut
  them. ``blocks`` messages are decoded (a message that does not decode is skipped and
  counted); copies for heights already projected are duplicates (every validator publishes
  the same bytes). Block ``h`` is projected once both its cut block and a FinalizedBlock copy
  of height ``h`` are known: the first copy, in log order, that :func:`ledger.follower.check_copy`
  accepts against the validator set of ``h`` (forged or corrupt copies are skipped and
  counted) is kept; the cut block is executed by :class:`~ledger.execution.LedgerMachine`
  and its header hash must equal the certified one. A mismatch is :class:`Diverged`: the
  core disagrees with a quorum, nothing is written and the projector stops.
* Rows (block, certificate votes, entries, write set into typed tables) come from the
  executed block only: world-state tables are the ledger's own writes, never SQL logic.
* Resuming needs the core's state. It is rebuilt from the database, not from a snapshot:
  ``chain.state_records`` holds every record of the state after ``chain.meta.height``
  (written with the block) and ``chain.pending_blocks`` the copies above it, all in the same
  transaction as the positions. The tx messages after the last projected block
  (``chain.meta.last_tx_offset``) are kept in memory only: at each (re)start the runner
  rewinds ``tx`` to ``last_tx_offset + 1`` (:meth:`ChainProjection.restart_offsets`), so
  after SIGKILL the projector restarts exactly where the last commit left it (D20).
* Work ahead of the certificate (D20): as transactions arrive, before the runner holds or
  applies them (:meth:`ChainProjection.read_ahead`), they are cut, and the next block is
  executed with every signature assumed valid. When its certificate comes, that result is
  used only if the certificate vouches for every entry's signature
  (:func:`~ledger.finality.certified_signatures`), which makes it exactly the execution the
  certificate allows; otherwise the block is executed again. The hash is compared either
  way.
* ``receipts`` are a function of the final blocks (``chain.receipts`` is a view); the topic is
  read only to cross-check (:mod:`projections.chain_receipts`). The rows of a block are built
  by :mod:`projections.chain_rows`, which the audit uses too.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import Message

from ledger.blocks import (
    BlockHeader,
    EntryResult,
    decode_finalized,
    peek_height,
)
from ledger.cutter import CutBlock, Cutter
from ledger.errors import DecodeError, LedgerError
from ledger.execution import ExecutedBlock, LedgerMachine
from ledger.finality import certified_signatures
from ledger.follower import Certified, check_copy, compare
from ledger.genesis import Genesis, genesis_writes
from ledger.results import ResultCode
from ledger.state import WorldState, schema_for
from projections.chain_receipts import ReceiptCheck
from projections.chain_rows import entry_rows, header_rows
from projections.rows import BatchRows, TableRows, column_types, insert_rows
from projections.runner import Projection
from schemas.codec import decode_canonical

log = logging.getLogger("pantheon.projections.chain")

NAME = "chain"
#: every reason ``counters`` counts (``pantheon_projection_skipped{reason}``, exported at 0 from
#: the start so that a panel or alert on a reason has a series before its first event)
COUNTER_REASONS = (
    "blocks_duplicate",
    "blocks_executed_ahead",
    "blocks_invalid",
    "blocks_malformed",
    "receipts_malformed",
    "receipts_mismatch",
    "receipts_unchecked",
    "receipts_verified",
)


class _EverySignature:
    """Vouches for every envelope: a speculative execution, used only when the certificate
    vouches for all of the block's entries (see the module docstring)."""

    def __contains__(self, _item: object) -> bool:
        return True


EVERY_SIGNATURE = _EverySignature()


@dataclass(frozen=True, slots=True)
class _Ahead:
    """The next block, executed before its certificate came, with its entry rows."""

    cut: CutBlock
    executed: ExecutedBlock
    rows: BatchRows


class Diverged(LedgerError):
    """A certified block's hash differs from the one the core computes: stop, write nothing."""


class GenesisMismatch(LedgerError):
    """The database was projected from another genesis."""


class ChainProjection(Projection):
    """Projection of the public chain tables (see module docstring)."""

    #: ``apply`` never uses COPY: the runner sends each transaction in pipeline mode.
    pipelined = True

    def __init__(self, genesis: Genesis, prefix: str = "pantheon.") -> None:
        self.name = NAME
        self.genesis = genesis
        self.topic_tx = f"{prefix}tx"
        self.topic_blocks = f"{prefix}blocks"
        self.topic_receipts = f"{prefix}receipts"
        self.counters: Counter[str] = Counter()
        self.rows_written = 0
        self.highest_seen = 0
        self.machine = LedgerMachine(genesis)
        self.receipts = ReceiptCheck(self.counters)
        self._init_memory(last_tx_offset=-1)

    def _init_memory(self, *, last_tx_offset: int) -> None:
        params = self.genesis.params
        self.cutter = Cutter(
            chain_id=params.chain_id,
            next_height=self.machine.height + 1,
            max_block_txs=params.max_block_txs,
            max_block_bytes=params.max_block_bytes,
        )
        self.last_tx_offset = last_tx_offset
        self._fed_upto = last_tx_offset
        self._cuts: dict[int, CutBlock] = {}
        self._copies: dict[int, list[tuple[int, bytes]]] = {}
        #: The copy chosen for each of the last few projected heights (later copies of it
        #: are recognised by their bytes).
        self._last_projected: dict[int, bytes] = {}
        #: The next block executed before its certificate (with every signature vouched for).
        self._ahead: _Ahead | None = None
        #: Copies held above the projected height, as decoded when they came (by offset).
        self._decoded: dict[int, tuple[BlockHeader, dict[str, Any], tuple[EntryResult, ...]]] = {}
        #: Offset -> height of the rows in ``chain.pending_blocks``.
        self._stored_copies: dict[int, int] = {}
        self._new_copies: list[tuple[int, int, bytes]] = []
        self._dropped_copies: list[int] = []
        self.receipts.reset_recent()

    @property
    def height(self) -> int:
        """Height of the last projected block (0 = genesis only)."""
        return self.machine.height

    def topics(self) -> list[str]:
        """``tx``, ``blocks`` and ``receipts`` of the chain."""
        return [self.topic_tx, self.topic_blocks, self.topic_receipts]

    def commit_due(self, fresh: Sequence[Message]) -> bool:
        """Only a ``blocks`` message for a height not projected yet, or the transactions that
        complete the cut of a block whose copy is held (read ahead, so already cut), can
        complete a block: other transactions, receipts and the other validators' copies of
        projected blocks wait (in the runner's memory) to be committed with it
        (``Projection.commit_due``)."""
        height = self.machine.height
        if height + 1 in self._cuts and self._copies.get(height + 1):
            return True
        return any(
            msg.topic() == self.topic_blocks and (peek_height(msg.value() or b"") or 0) > height
            for msg in fresh
        )

    # -- resume ---------------------------------------------------------------------------
    def resume(self, cur: psycopg.Cursor[Any]) -> None:
        """Rebuild the core's state, the cutter and the pending copies from the tables."""
        cur.execute(
            "SELECT genesis_hash, height, last_hash, state_root, last_tx_offset FROM chain.meta"
        )
        row = cur.fetchone()
        if row is None:
            self._write_genesis(cur)
            self.machine = LedgerMachine(self.genesis)
            self._init_memory(last_tx_offset=-1)
            return
        genesis_hash, height, last_hash, state_root, last_tx_offset = row
        if bytes(genesis_hash) != self.genesis.hash():
            raise GenesisMismatch("this database was projected from another genesis")
        cur.execute("SELECT key, record FROM chain.state_records")
        records = [(k, decode_canonical(schema_for(k), bytes(v))) for k, v in cur.fetchall()]
        state = WorldState.restore(iter(records), height=height, root=bytes(state_root))
        self.machine = LedgerMachine.resume(self.genesis, state, bytes(last_hash))
        self._init_memory(last_tx_offset=last_tx_offset)
        cur.execute("SELECT source_offset, height, raw FROM chain.pending_blocks ORDER BY 1")
        for offset, h, raw in cur.fetchall():
            self._copies.setdefault(h, []).append((offset, bytes(raw)))
            self._stored_copies[offset] = h
            self.highest_seen = max(self.highest_seen, h)
        self.highest_seen = max(self.highest_seen, height)
        log.info("resumed", extra={"height": height, "records": len(records)})

    def _write_genesis(self, cur: psycopg.Cursor[Any]) -> None:
        machine = LedgerMachine(self.genesis)
        rows = BatchRows()
        rows.add_writes(genesis_writes(self.genesis), 0, lambda _key: None)
        rows.write(cur)
        cur.execute(
            "INSERT INTO chain.meta (chain_id, genesis_hash, height, last_hash, state_root, "
            "last_tx_offset, tx_count, ok_count) VALUES (%s, %s, 0, %s, %s, -1, 0, 0)",
            (
                self.genesis.params.chain_id,
                self.genesis.hash(),
                machine.last_hash,
                machine.state.root,
            ),
        )

    def restart_offsets(self) -> dict[tuple[str, int], int]:
        """After ``resume``: transactions are re-read from the first one not yet in a
        projected block (``Projection.restart_offsets``)."""
        return {(self.topic_tx, 0): self.last_tx_offset + 1}

    # -- ahead of the certificate ---------------------------------------------------------
    def read_ahead(self, fresh: Sequence[Message]) -> None:
        """Cut the transactions of ``fresh`` and execute the next block if it is cut
        (``Projection.read_ahead``); nothing is stored."""
        for msg in fresh:
            if msg.topic() == self.topic_tx:
                offset = msg.offset()
                assert offset is not None
                self._feed(offset, msg.timestamp()[1], msg.value() or b"")
        cut = self._cuts.get(self.machine.height + 1)
        if cut is not None and (self._ahead is None or self._ahead.cut is not cut):
            executed = self.machine.execute(cut, verified_signatures=EVERY_SIGNATURE)
            rows = BatchRows()
            entry_rows(rows, executed, cut, self.machine.state.get)
            self._ahead = _Ahead(cut, executed, rows)

    def _execute(
        self, cut: CutBlock, certified: Sequence[EntryResult]
    ) -> tuple[ExecutedBlock, BatchRows | None]:
        """``cut`` executed as its certificate allows, and its entry rows when they were
        built ahead (the execution ahead is used when the certificate allows it)."""
        raws = [e.raw for e in cut.entries]
        vouched = certified_signatures(raws, certified)
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead.cut is cut and all(raw in vouched for raw in raws):
            self.counters["blocks_executed_ahead"] += 1
            return ahead.executed, ahead.rows
        return self.machine.execute(cut, verified_signatures=vouched), None

    # -- a batch --------------------------------------------------------------------------
    def apply(self, cur: psycopg.Cursor[Any], batch: Sequence[Message]) -> None:
        """Feed the batch to the core and write what became final and verified."""
        receipts: list[bytes] = []
        for msg in batch:
            topic, offset, value = msg.topic(), msg.offset(), msg.value() or b""
            assert offset is not None
            if topic == self.topic_tx:
                self._feed(offset, msg.timestamp()[1], value)
            elif topic == self.topic_blocks:
                self._add_copy(offset, value)
            elif topic == self.topic_receipts:
                receipts.append(value)
        rows, tx_count, ok_count = self._project_ready()
        self.rows_written += rows.write(cur)
        self._store_pending(cur)
        if tx_count:
            cur.execute(
                "UPDATE chain.meta SET height = %s, last_hash = %s, state_root = %s, "
                "last_tx_offset = %s, tx_count = tx_count + %s, ok_count = ok_count + %s",
                (
                    self.machine.height,
                    self.machine.last_hash,
                    self.machine.state.root,
                    self.last_tx_offset,
                    tx_count,
                    ok_count,
                ),
            )
        self.receipts.check(cur, receipts, self.machine.height)

    def _feed(self, offset: int, timestamp_ms: int, raw: bytes) -> None:
        if offset <= self._fed_upto:
            return
        self._fed_upto = offset
        block = self.cutter.feed(offset, timestamp_ms, raw)
        if block is not None:
            self._cuts[block.height] = block

    def _add_copy(self, offset: int, raw: bytes) -> None:
        # Every validator publishes the same bytes: a copy identical to one already held
        # (or just projected) decodes the same, so only the first is decoded here.
        peeked = peek_height(raw)
        if peeked is not None:
            if self._last_projected.get(peeked) == raw:
                self.counters["blocks_duplicate"] += 1
                return
            held = self._copies.get(peeked)
            if held is not None and any(other == raw for _, other in held):
                held.append((offset, raw))
                self._new_copies.append((offset, peeked, raw))
                return
        try:
            decoded = decode_finalized(raw)
        except DecodeError as exc:
            self.counters["blocks_malformed"] += 1
            log.warning(
                "skipping a malformed block message", extra={"offset": offset, "error": str(exc)}
            )
            return
        header = decoded[0]
        if header.height <= self.machine.height:
            self.counters["blocks_duplicate"] += 1
            return
        self.highest_seen = max(self.highest_seen, header.height)
        self._decoded[offset] = decoded
        self._copies.setdefault(header.height, []).append((offset, raw))
        self._new_copies.append((offset, header.height, raw))

    def _project_ready(self) -> tuple[BatchRows, int, int]:
        rows = BatchRows()
        tx_count = ok_count = 0
        while True:
            height = self.machine.height + 1
            cut, copies = self._cuts.get(height), self._copies.get(height)
            if cut is None or not copies:
                break
            chosen = self._first_valid(height, copies)
            if chosen is None:
                continue
            source_offset, cert = chosen.offset, chosen.certificate
            executed, built_ahead = self._execute(cut, chosen.results)
            mismatch = compare(executed, chosen)
            if mismatch:
                raise Diverged(
                    f"block {height}: the core computes {executed.block_hash.hex()}, the "
                    f"quorum certified {cert.block_hash.hex()} ({mismatch.describe()} differ)"
                )
            header_rows(rows, executed, cert, source_offset)
            if built_ahead is None:
                entry_rows(rows, executed, cut, self.machine.state.get)
            else:
                rows.merge(built_ahead)
            self.receipts.remember(executed)
            self.machine.commit(executed)
            del self._cuts[height], self._copies[height]
            for offset, _ in copies:
                self._decoded.pop(offset, None)
            self._last_projected[height] = next(r for o, r in copies if o == source_offset)
            self._last_projected.pop(height - 8, None)
            self.last_tx_offset = cut.last_offset
            tx_count += len(executed.results)
            ok_count += sum(1 for r in executed.results if r.code is ResultCode.OK)
        return rows, tx_count, ok_count

    def _first_valid(self, height: int, copies: list[tuple[int, bytes]]) -> Certified | None:
        """The first copy of ``height``, in log order, with a valid certificate
        (:func:`ledger.follower.check_copy`); the others before it are dropped."""
        validators = self.machine.validator_set()
        for offset, raw in sorted(copies):
            verdict = check_copy(offset, raw, validators, self._decoded.pop(offset, None))
            if isinstance(verdict, Certified):
                return verdict
            self.counters["blocks_invalid"] += 1
            log.warning(
                "skipping an invalid block copy",
                extra={"height": height, "offset": offset, "error": verdict.reason},
            )
            self._dropped_copies.append(offset)
        del self._copies[height]
        return None

    def _store_pending(self, cur: psycopg.Cursor[Any]) -> None:
        """Keep ``chain.pending_blocks`` equal to the valid copies held above the projected
        height (written only when that changes: usually a block is projected as soon as its
        first copy comes)."""
        height, dropped = self.machine.height, set(self._dropped_copies)
        gone = [o for o, h in self._stored_copies.items() if h <= height or o in dropped]
        if gone:
            cur.execute("DELETE FROM chain.pending_blocks WHERE source_offset = ANY(%s)", (gone,))
            for offset in gone:
                del self._stored_copies[offset]
        fresh = [c for c in self._new_copies if c[1] > height and c[0] not in dropped]
        self._new_copies, self._dropped_copies = [], []
        insert_rows(
            cur,
            column_types(cur),
            TableRows("pending_blocks", ("source_offset", "height", "raw"), (), fresh),
        )
        self._stored_copies.update((offset, h) for offset, h, _ in fresh)
