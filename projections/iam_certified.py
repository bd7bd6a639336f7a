"""A signer policy that believes the chain projection's tables only with a certificate (D75).

Theory of operation
-------------------
* PostgreSQL is not trusted (docs/security.md). :class:`~projections.iam_signers.ChainSigners`
  reads ``chain.meta``, ``chain.key_activity`` and ``chain.blocks.timestamp_ms`` as written,
  so whoever can write the database can make a key of their own an active SERVICE key of the
  institution, or move the header stamps D56 decides by. :class:`CertifiedSigners` reads the
  same tables as untrusted copies and checks them against the genesis (the trust anchor):

  - each block row, with its entries' tx ids and codes (``chain.transactions``), is encoded
    back into a ``FinalizedBlock`` and verified by :class:`ledger.outcomes.OutcomeVerifier`
    (the header hash recomputed, ``tx_root`` over the results, the quorum certificate
    against the validator set established from the genesis; candidate sets after
    membership changes are taken from ``chain.key_activity`` and ``chain.institutions``,
    adopted only if they hash to the certified header's set and enough of the previous set
    signed). Blocks are verified in height order; the first one that does not verify stops
    the certified height there (logged once): what needs a later height waits.
  - ``chain_height`` is the highest height verified; ``clock`` holds the stamps of verified
    headers only, kept in memory (a final block never changes, so a stamp moved after it was
    verified changes nothing, and one moved before makes its block fail to verify).
  - ``history`` is the keys' history as :class:`ledger.key_backing.KeyBacking` derived it
    from the verified blocks' OK entries (their bodies hashing to the certified ``tx_id``):
    registrations, rotations and revocations, never the ``chain.key_activity`` rows. Those
    are still read, and a row the backing does not hold is logged once (a tampered table);
    nothing in it is used. A row inserted, flipped or deleted therefore changes nothing: in
    particular an inserted deactivation cannot make a genuine key's later events ``stale``
    (which would forget the disables and revocations they carried on a fresh reader).
    Only entries whose ``operation`` column names a backing operation are fetched; a
    database that relabels a revocation hides it (a revoked key then stays usable for whoever
    holds its private key; the audit reports the relabelled row).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg

from ledger.blocks import EntryResult, encode_finalized
from ledger.errors import LedgerError
from ledger.genesis import Genesis
from ledger.iam_events import KEY_ACTIVITY_COLUMNS, KeyHistory
from ledger.iam_time import GENESIS_MS, ChainClock
from ledger.key_backing import BACKING_OPERATIONS, KeyBacking, as_row
from ledger.members import ValidatorSet, is_member
from ledger.outcomes import OutcomeVerifier
from ledger.results import ResultCode
from ledger.tx import TxRejected, parse_tx
from projections.read.certified import HEADER_COLUMNS, header_of
from schemas.codec import decode_canonical
from schemas.errors import CodecError

log = logging.getLogger("pantheon.projections.iam")

_BLOCKS = (
    f"SELECT {HEADER_COLUMNS}, certificate FROM chain.blocks "
    "WHERE height > %s ORDER BY height LIMIT %s"
)
_ENTRIES = (
    "SELECT height, tx_id, tx_offset, result_code, "
    "CASE WHEN result_code = 0 AND operation = ANY(%s) THEN envelope END "
    "FROM chain.transactions WHERE height > %s AND height <= %s ORDER BY height, position"
)


def log_unbacked(institution: str, what: str, **details: object) -> None:
    """Say which chain row was left out (structured, as the IAM row refusals are)."""
    log.warning(
        "chain row refused: not backed by a certified block",
        extra={"institution": institution, "what": what, **details},
    )


class CertifiedSigners:
    """Production signer policy: the chain projection's rows, believed only with a quorum
    certificate verified from ``genesis`` (see the module docstring)."""

    def __init__(self, genesis: Genesis, *, institution: str = "", batch: int = 2000) -> None:
        self._institution, self._batch = institution, batch
        self._verifier = OutcomeVerifier(genesis, candidates=self._candidate)
        self._backing = KeyBacking.from_genesis(genesis)
        self._clock = ChainClock()
        self._clock.append(0, GENESIS_MS)
        self._height = 0
        self._cur: psycopg.Cursor[Any] | None = None
        self._stuck: int | None = None  # a height whose rows did not verify (logged once)
        self._warned: set[tuple[Any, ...]] = set()

    def chain_height(self, cur: psycopg.Cursor[Any]) -> int:
        try:
            with cur.connection.transaction():  # a savepoint: a missing schema is not fatal
                while self._advance(cur):
                    pass
        except psycopg.errors.UndefinedTable:
            return -1 if self._height == 0 else self._height
        return self._height

    def history(self, cur: psycopg.Cursor[Any], key_ids: Sequence[bytes]) -> KeyHistory:
        cur.execute(
            f"SELECT {', '.join(KEY_ACTIVITY_COLUMNS)} FROM chain.key_activity "
            "WHERE key_id = ANY(%s) AND height <= %s",
            (list(key_ids), self._height),
        )
        for values in cur.fetchall():  # only to report a tampered table: nothing is used
            row = as_row(values)
            if not self._backing.backs(row) and row not in self._warned:
                self._warned.add(row)
                log_unbacked(
                    self._institution,
                    "chain.key_activity",
                    key_id=row[0].hex(),
                    height=row[1],
                    key_institution=row[2],
                    role=row[3],
                    active=row[4],
                )
        return KeyHistory.from_rows(self._backing.rows_of(key_ids, self._height))

    def clock(self, cur: psycopg.Cursor[Any], height: int) -> ChainClock | None:
        return self._clock

    def _advance(self, cur: psycopg.Cursor[Any]) -> bool:
        """Verify the next blocks; whether a whole batch verified (there may be more)."""
        limit = self._batch if self._stuck is None else 1  # stuck: retry that block alone
        blocks = cur.execute(_BLOCKS, (self._height, limit)).fetchall()
        if not blocks:
            return False
        entries: dict[int, list[tuple[Any, ...]]] = {}
        for row in cur.execute(
            _ENTRIES, (list(BACKING_OPERATIONS), self._height, int(blocks[-1][0]))
        ).fetchall():
            entries.setdefault(int(row[0]), []).append(row[1:])
        names = [str(r[0]) for r in cur.execute("SELECT institution_id FROM chain.institutions")]
        self._cur = cur
        try:
            for block in blocks:
                if not self._certify(block, entries.get(int(block[0]), []), names):
                    return False
        finally:
            self._cur = None
        return len(blocks) == limit

    def _certify(self, block: Sequence[Any], rows: list[tuple[Any, ...]], names: list[str]) -> bool:
        height = int(block[0])
        try:
            if height != self._height + 1:
                raise LedgerError(f"block {self._height + 1} is missing")
            header = header_of(block)
            results = [
                EntryResult(tx_id=bytes(t), offset=int(o), code=ResultCode(c))
                for t, o, c, _env in rows
            ]
            certificate = decode_canonical("QuorumCertificate", bytes(block[8]))
            certified = self._verifier.verify(encode_finalized(header, certificate, results))
        except (LedgerError, CodecError, ValueError, KeyError) as exc:
            if self._stuck != height:
                self._stuck = height
                log_unbacked(self._institution, "chain.blocks", height=height, why=str(exc))
            return False
        self._clock.append(height, certified.header.timestamp_ms)
        for result, (_t, _o, _c, envelope) in zip(certified.results, rows, strict=True):
            if envelope is None or result.code is not ResultCode.OK:
                continue
            try:
                tx = parse_tx(bytes(envelope), signature_verified=True)  # the quorum checked it
            except TxRejected:
                continue
            if tx.tx_id == result.tx_id:
                self._backing.add(tx, height, names)
        self._height, self._stuck = height, None
        return True

    def _candidate(self, height: int) -> ValidatorSet | None:
        """The validator set of ``height`` as the projection's rows state it (untrusted:
        adopted only as :class:`~ledger.outcomes.OutcomeVerifier` allows)."""
        cur = self._cur
        if cur is None:
            return None
        institutions = cur.execute(
            "SELECT institution_id, status, effective_height FROM chain.institutions"
        ).fetchall()
        operators = cur.execute(
            "SELECT DISTINCT ON (key_id) key_id, institution_id, active, public_key "
            "FROM chain.key_activity WHERE role = 'OPERATOR' AND height < %s "
            "ORDER BY key_id, height DESC",
            (height,),
        ).fetchall()
        members: dict[str, dict[bytes, bytes]] = {
            str(inst): {}
            for inst, status, effective in institutions
            if is_member({"status": status, "effective_height": effective}, height)
        }
        for kid, inst, active, public_key in operators:
            if active and str(inst) in members:
                members[str(inst)][bytes(kid)] = bytes(public_key)
        return ValidatorSet(height=height, members=members)


__all__ = ["CertifiedSigners", "log_unbacked"]
