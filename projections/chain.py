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
  read only to cross-check: each receipt is compared with the projected entry at its offset,
  and malformed or contradicting receipts are counted and logged, never written.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import Message

from ledger.blocks import (
    BlockHeader,
    EntryResult,
    block_receipts,
    decode_finalized,
    peek_height,
)
from ledger.cutter import CutBlock, Cutter
from ledger.errors import DecodeError, LedgerError
from ledger.execution import ExecutedBlock, LedgerMachine
from ledger.finality import QuorumCertificate, certified_signatures
from ledger.follower import Certified, check_copy, compare
from ledger.genesis import Genesis, genesis_writes
from ledger.hashing import canonical_bytes
from ledger.results import ResultCode
from ledger.state import WorldState, schema_for
from ledger.tx import parse_tx
from projections.rows import BatchRows, TableRows, check_owners, column_types, insert_rows
from projections.runner import Projection
from schemas.codec import decode, decode_canonical
from schemas.errors import CodecError

log = logging.getLogger("pantheon.projections.chain")

NAME = "chain"
UNAUTHENTICATED = frozenset({ResultCode.MALFORMED, ResultCode.TOO_LARGE, ResultCode.BAD_SIGNATURE})
MAX_HELD_RECEIPTS = 100_000
RECENT_RECEIPT_HEIGHTS = 64  # projected heights whose receipt bytes are kept for comparison
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
        self._init_memory(last_tx_offset=-1)
        self._held_receipts: dict[int, list[dict[str, Any]]] = {}
        self._held_count = 0

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
        # The exact Receipt bytes of the last projected heights: every validator publishes
        # these, so most receipts are checked by one lookup, without decoding.
        self._recent_receipts: dict[bytes, int] = {}
        self._recent_by_height: deque[tuple[int, list[bytes]]] = deque()

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
            self._entry_rows(rows, executed, cut)
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
        self._check_receipts(cur, receipts)

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
            executed, entry_rows = self._execute(cut, chosen.results)
            mismatch = compare(executed, chosen)
            if mismatch:
                raise Diverged(
                    f"block {height}: the core computes {executed.block_hash.hex()}, the "
                    f"quorum certified {cert.block_hash.hex()} ({mismatch.describe()} differ)"
                )
            self._header_rows(rows, executed, cert, source_offset)
            if entry_rows is None:
                self._entry_rows(rows, executed, cut)
            else:
                rows.merge(entry_rows)
            self._remember_receipts(executed)
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

    def _add_block_rows(
        self,
        rows: BatchRows,
        executed: ExecutedBlock,
        cut: CutBlock,
        cert: QuorumCertificate,
        source_offset: int,
    ) -> None:
        """Every row of one certified block (``_header_rows`` and ``_entry_rows``)."""
        self._header_rows(rows, executed, cert, source_offset)
        self._entry_rows(rows, executed, cut)

    @staticmethod
    def _header_rows(
        rows: BatchRows, executed: ExecutedBlock, cert: QuorumCertificate, source_offset: int
    ) -> None:
        """The block's row and its certificate's votes."""
        header, height = executed.header, executed.header.height
        ok = sum(1 for r in executed.results if r.code is ResultCode.OK)
        certificate = canonical_bytes("QuorumCertificate", cert.record())
        block = {
            "height": height,
            "hash": executed.block_hash,
            "prev_hash": header.prev_hash,
            "first_offset": header.first_offset,
            "last_offset": header.last_offset,
            "tx_root": header.tx_root,
            "state_root": header.state_root,
            "validator_set_hash": header.validator_set_hash,
            "timestamp_ms": header.timestamp_ms,
            "tx_count": len(executed.results),
            "ok_count": ok,
            "certificate": certificate,
            "source_offset": source_offset,
        }
        rows.add_named("blocks", [block])
        rows.add(
            "block_votes",
            [
                (
                    height,
                    i,
                    v.operator_key_id,
                    executed.validator_set.institution_of(v.operator_key_id),
                    v.public_key,
                    v.signature,
                )
                for i, v in enumerate(cert.votes)
            ],
        )

    def _entry_rows(self, rows: BatchRows, executed: ExecutedBlock, cut: CutBlock) -> None:
        """The block's entries, asset owners and write set (before ``machine.commit``)."""
        height = executed.header.height
        entries, owners, owner_rows = [], {}, []
        parsed = executed.transactions or (None,) * len(cut.entries)
        for position, (entry, result) in enumerate(zip(cut.entries, executed.results, strict=True)):
            sender = nonce = operation = None
            if result.code not in UNAUTHENTICATED:
                tx = parsed[position] or parse_tx(entry.raw, signature_verified=True)
                sender, nonce, operation, args = tx.sender, tx.nonce, tx.operation, tx.args
                if result.code is ResultCode.OK and operation in ("RegisterAsset", "TransferAsset"):
                    owner = sender if operation == "RegisterAsset" else args["new_owner_key_id"]
                    owners[args["asset_id"]] = owner
                    owner_rows.append((args["asset_id"], height, position, result.tx_id, owner))
            envelope = None if result.code is ResultCode.TOO_LARGE else entry.raw
            entries.append(
                {
                    "height": height,
                    "position": position,
                    "tx_id": result.tx_id,
                    "tx_offset": result.offset,
                    "result_code": int(result.code),
                    "sender": sender,
                    "nonce": nonce,
                    "operation": operation,
                    "envelope": envelope,
                }
            )
        check_owners(executed.writes, owners)
        rows.add_named("transactions", entries)
        rows.add("asset_owners", owner_rows)
        rows.add_writes(executed.writes, height, self.machine.state.get)

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

    # -- receipts -------------------------------------------------------------------------
    def _remember_receipts(self, executed: ExecutedBlock) -> None:
        header = executed.header
        expected = block_receipts(
            executed.results, height=header.height, block_hash=executed.block_hash
        )
        for raw in expected:
            self._recent_receipts[raw] = header.height
        self._recent_by_height.append((header.height, expected))
        while len(self._recent_by_height) > RECENT_RECEIPT_HEIGHTS:
            height, old = self._recent_by_height.popleft()
            for raw in old:
                if self._recent_receipts.get(raw) == height:
                    del self._recent_receipts[raw]

    def _check_receipts(self, cur: psycopg.Cursor[Any], raws: list[bytes]) -> None:
        known = self._recent_receipts
        unknown = []
        for raw in raws:
            if raw in known:  # byte for byte the receipt of a projected entry
                self.counters["receipts_verified"] += 1
            else:
                unknown.append(raw)
        raws = unknown
        decoded: dict[bytes, dict[str, Any] | None] = {}  # validators send identical copies
        for raw in raws:
            if raw not in decoded:
                try:
                    decoded[raw] = decode(raw, "Receipt")[1]
                except CodecError:
                    decoded[raw] = None
            record = decoded[raw]
            if record is None:
                self.counters["receipts_malformed"] += 1
                continue
            if self._held_count >= MAX_HELD_RECEIPTS:
                self.counters["receipts_unchecked"] += 1
                continue
            self._held_receipts.setdefault(record["offset"], []).append(record)
            self._held_count += 1
        height = self.machine.height
        due = [o for o, rs in self._held_receipts.items() if rs[0]["height"] <= height]
        if not due:
            return
        cur.execute(
            "SELECT tx_offset, tx_id, height, result_code, hash FROM chain.transactions "
            "JOIN chain.blocks USING (height) WHERE tx_offset = ANY(%s)",
            (due,),
        )
        expected = {int(r[0]): (bytes(r[1]), r[2], r[3], bytes(r[4])) for r in cur.fetchall()}
        for offset in due:
            for record in self._held_receipts.pop(offset):
                self._held_count -= 1
                got = (
                    record["tx_id"],
                    record["height"],
                    record["result_code"],
                    record["block_hash"],
                )
                if expected.get(offset) == got:
                    self.counters["receipts_verified"] += 1
                else:
                    self.counters["receipts_mismatch"] += 1
                    log.warning("a receipt contradicts the final blocks", extra={"offset": offset})
