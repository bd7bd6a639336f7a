"""Which keys may sign an institution's IAM events: the IAM projection's signer policy (D21)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import psycopg

from ledger.iam_events import KEY_ACTIVITY_COLUMNS, SERVICE_ROLE, KeyHistory
from ledger.keys import key_id


class SignerPolicy(Protocol):
    """Where the IAM projection learns which keys may sign its institution's events (D21)."""

    def chain_height(self, cur: psycopg.Cursor[Any]) -> int:
        """The certified height the key history is known up to (-1: nothing yet)."""
        ...

    def history(self, cur: psycopg.Cursor[Any], key_ids: Sequence[bytes]) -> KeyHistory:
        """The history of ``key_ids`` up to :meth:`chain_height`."""
        ...


class ChainSigners:
    """Production policy: the certified chain projected in the same database
    (``chain.meta`` and ``chain.key_activity``, written by the chain projector)."""

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


class PinnedSigners:
    """A fixed set of public keys trusted as the institution's IAM keys from height 0, with
    no chain (for processes run without a ledger: unit and gateway tests). Production wiring
    (:mod:`projections.projector`, ``pantheon gateway``, the rebuild) never uses it."""

    def __init__(self, institution: str, public_keys: Sequence[bytes]) -> None:
        self._rows = [
            (key_id(pk), 0, institution, SERVICE_ROLE, True, bytes(pk)) for pk in public_keys
        ]

    def chain_height(self, cur: psycopg.Cursor[Any]) -> int:
        return 0

    def history(self, cur: psycopg.Cursor[Any], key_ids: Sequence[bytes]) -> KeyHistory:
        return KeyHistory.from_rows(self._rows)
