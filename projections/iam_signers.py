"""Which keys may sign an institution's IAM events: the IAM projection's signer policy (D21)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import psycopg

from ledger.iam_events import KEY_ACTIVITY_COLUMNS, SERVICE_ROLE, KeyHistory
from ledger.iam_time import GENESIS_MS, ChainClock
from ledger.keys import key_id


class SignerPolicy(Protocol):
    """Where the IAM projection learns which keys may sign its institution's events (D21)."""

    def chain_height(self, cur: psycopg.Cursor[Any]) -> int:
        """The certified height the key history is known up to (-1: nothing yet)."""
        ...

    def history(self, cur: psycopg.Cursor[Any], key_ids: Sequence[bytes]) -> KeyHistory:
        """The history of ``key_ids`` up to :meth:`chain_height`."""
        ...

    def clock(self, cur: psycopg.Cursor[Any], height: int) -> ChainClock | None:
        """Header stamps of the certified blocks up to ``height`` (D56; None: this policy
        has no chain, so the append time is not checked)."""
        ...


class ChainSigners:
    """The chain projected in the same database, believed as written (``chain.meta``,
    ``chain.key_activity`` and the header stamps of ``chain.blocks``, written by the chain
    projector only for blocks whose quorum certificate it checked and whose header hash it
    recomputed, D16/D20; but whoever can write the database can write them too). The stamps
    are kept in memory and only the blocks after the last one read are fetched (a final
    block never changes). Used only by a gateway started without ``--genesis`` and by
    tests; the projector, the rebuild, the gateway and ``pantheon iam`` use
    :class:`~projections.iam_certified.CertifiedSigners` (D75)."""

    def __init__(self) -> None:
        self._clock = ChainClock()

    def chain_height(self, cur: psycopg.Cursor[Any]) -> int:
        try:
            with cur.connection.transaction():  # a savepoint: a missing schema is not fatal
                row = cur.execute("SELECT height FROM chain.meta").fetchone()
        except psycopg.errors.UndefinedTable:
            return -1
        return -1 if row is None else int(row[0])

    def history(self, cur: psycopg.Cursor[Any], key_ids: Sequence[bytes]) -> KeyHistory:
        cur.execute(
            f"SELECT {', '.join(KEY_ACTIVITY_COLUMNS)} FROM chain.key_activity "
            "WHERE key_id = ANY(%s) AND height <= (SELECT height FROM chain.meta)",
            (list(key_ids),),
        )
        return KeyHistory.from_rows(cur.fetchall())

    def clock(self, cur: psycopg.Cursor[Any], height: int) -> ChainClock | None:
        known = len(self._clock.running_max) - 1
        if known > height:  # the chain tables were rebuilt under us: read them again
            self._clock, known = ChainClock(), -1
        if known < 0:
            self._clock.append(0, GENESIS_MS)
            known = 0
        rows = cur.execute(
            "SELECT height, timestamp_ms FROM chain.blocks WHERE height > %s AND height <= %s "
            "ORDER BY height",
            (known, height),
        ).fetchall()
        for block_height, timestamp_ms in rows:
            self._clock.append(int(block_height), int(timestamp_ms))
        return self._clock


class PinnedSigners:
    """A fixed set of public keys trusted as the institution's IAM keys from height 0, with
    no chain (for processes run without a ledger: unit and gateway tests), so no append-time
    bound either (D56). Production wiring (:mod:`projections.projector`, ``pantheon gateway``,
    the rebuild) never uses it."""

    def __init__(self, institution: str, public_keys: Sequence[bytes]) -> None:
        self._rows = [
            (key_id(pk), 0, institution, SERVICE_ROLE, True, bytes(pk)) for pk in public_keys
        ]

    def chain_height(self, cur: psycopg.Cursor[Any]) -> int:
        return 0

    def history(self, cur: psycopg.Cursor[Any], key_ids: Sequence[bytes]) -> KeyHistory:
        return KeyHistory.from_rows(self._rows)

    def clock(self, cur: psycopg.Cursor[Any], height: int) -> ChainClock | None:
        return None
