"""An IAM change on an idle chain moves the chain's clock itself: one signed tick (D62).

Theory of operation
-------------------
* Readers decide an IAM event the broker appended at ``a`` only once the certified chain has
  a block stamped after ``a - S`` (D56, :mod:`ledger.iam_time`), and blocks are cut only when
  transactions arrive (:mod:`ledger.cutter`). So on a chain without transactions for more
  than ``S`` an honest change would wait for somebody else's transaction.
* After the publisher's events are on the topic (it knows ``a`` from the delivery reports),
  :meth:`ClockTicker.ensure_block_after` looks at the chain projected in the institution's
  database. If a certified block is stamped after ``a - S`` (the running maximum of the
  header stamps, :attr:`ledger.iam_time.ChainClock.latest_ms`: the readers' own test,
  :func:`ledger.iam_time.final_after`), or a tick was already sent for an event appended
  after ``a - S`` (:func:`tick_due`), nothing is sent. Otherwise
  it submits one ``AnchorData`` (:func:`tick_args`) signed by the institution's IAM SERVICE
  key with that key's next nonce from ``chain.keys``, and records ``a`` as the last tick.
  The validators cut it into a block (their ``TimeToCut`` rule), stamped by the broker after
  ``a``: the readers can decide, and the publisher's wait ends.
* One tick per ``S`` of broker time per institution at most: the record is the one row of
  ``iam_clock_ticks``, locked (``FOR UPDATE``) while a process decides and sends, so gateway
  workers, replicas and the CLI of one institution share it; a failed send rolls it back.
  Only the institution's own publish path ticks: a message someone else writes to the IAM
  topic never does, so no Kafka writer can make the chain grow through this.
* Nothing a reader decides depends on the tick: it is an ordinary transaction the key could
  always send, and a block stamped after ``a - S`` only makes ``h(a - S)`` final, it never
  changes it (:class:`ledger.iam_time.ChainClock`). If the IAM key is not an active SERVICE
  key of the institution on the projected chain (pinned keys in tests) nothing is sent.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka import KafkaException, Producer
from prometheus_client import Counter
from psycopg_pool import ConnectionPool

from ledger.hashing import sha256
from ledger.iam_events import SERVICE_ROLE
from ledger.iam_time import GENESIS_MS, LOG_APPEND_TIME, final_after
from ledger.keys import KeyPair
from ledger.tx import parse_tx, sign_tx
from runtime.delivery import produce_flushed

log = logging.getLogger("pantheon.iam")

TICK_OPERATION = "AnchorData"
TICK_METADATA = json.dumps({"purpose": "iam-clock"}, separators=(",", ":"))
TICKS = Counter(
    "pantheon_iam_clock_ticks",
    "Transactions an institution's IAM service sent to move an idle chain's clock (D62)",
    ["institution"],
)

#: The projected chain: its id, its certified height, the largest header stamp of its blocks
#: after height ``seen`` (NULL: none), the IAM key's next nonce (NULL unless it is an active
#: SERVICE key of the institution there). The primary key bounds the read to new blocks.
_CHAIN = (
    "SELECT m.chain_id, m.height, (SELECT max(b.timestamp_ms) FROM chain.blocks b "
    "WHERE b.height > %(seen)s AND b.height <= m.height), k.next_nonce "
    "FROM chain.meta m "
    "LEFT JOIN chain.keys k ON k.key_id = %(key)s AND k.active AND k.role = %(role)s "
    "AND k.institution_id = %(institution)s"
)


def tick_due(*, latest_ms: int, claimed_ms: int, after_ms: int) -> bool:
    """Whether a tick must be sent so that a certified block is stamped after ``after_ms``:
    no certified block is (``latest_ms``, the running maximum of their stamps, decides as
    it does for the readers), and no tick was sent for an event appended after it."""
    return not final_after(latest_ms, after_ms) and not final_after(claimed_ms, after_ms)


@dataclass(slots=True)
class SeenStamps:
    """What a ticker knows of the chain's clock between calls: the running maximum of the
    header stamps of the certified blocks up to ``height`` (the genesis counts as stamped at
    :data:`GENESIS_MS`). Only the blocks after ``height`` are read again: a final block
    never changes."""

    height: int = 0
    latest_ms: int = GENESIS_MS

    def extend(self, height: int, new_max_ms: int | None) -> int:
        """Take in the blocks after :attr:`height` up to ``height``, whose largest stamp is
        ``new_max_ms`` (None: no block); the running maximum of them all."""
        if height < self.height:
            raise ValueError(f"height {height} below the {self.height} already seen")
        self.height = height
        if new_max_ms is not None:
            self.latest_ms = max(self.latest_ms, new_max_ms)
        return self.latest_ms

    def forget(self) -> None:
        """Start again from the genesis (the chain tables were rebuilt)."""
        self.height, self.latest_ms = 0, GENESIS_MS


@dataclass(frozen=True, slots=True)
class Need:
    """What a batch of delivered IAM messages needs: a certified block stamped after
    ``after_ms``; ``appended_ms`` is the latest append time, of message ``index``."""

    after_ms: int
    appended_ms: int
    index: int


def need_of(stamps: Sequence[tuple[int, int]], skew_ms: int) -> Need | None:
    """The :class:`Need` of messages with these ``(timestamp type, ms)`` delivery stamps, or
    None if any is not the broker's append time (the readers refuse those anyway)."""
    if not stamps or any(kind != LOG_APPEND_TIME for kind, _ in stamps):
        return None
    appended, index = max((ms, i) for i, (_, ms) in enumerate(stamps))
    return Need(after_ms=appended - skew_ms, appended_ms=appended, index=index)


def tick_args(institution: str, appended_ms: int, digest: bytes) -> dict[str, Any]:
    """The tick's ``AnchorData``: an id of the institution and the append time it is for (a
    data id is written once, chain-wide), the SHA-256 of the IAM message that waits."""
    return {
        "data_id": f"iam-clock/{institution}/{appended_ms}",
        "sha256": digest,
        "metadata": TICK_METADATA,
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockTicker:
    """Sends an institution's clock ticks (see the module docstring)."""

    institution: str
    tx_topic: str
    pool: ConnectionPool[Any]
    producer: Producer
    timeout_s: float
    seen: SeenStamps = field(default_factory=SeenStamps, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        TICKS.labels(self.institution)  # the series exists from the start, at 0

    def ensure_block_after(
        self, key: KeyPair, *, after_ms: int, appended_ms: int, message: bytes
    ) -> bytes | None:
        """Make the chain certify a block stamped after ``after_ms`` (``appended_ms - S`` of
        the IAM ``message`` that waits), unless one is or will be; the tick's tx id if one
        was sent."""
        try:
            with self._lock, self.pool.connection() as conn, conn.transaction():
                return self._tick(conn, key, after_ms, appended_ms, message)
        except psycopg.errors.UndefinedTable:  # no chain projected here: nothing to move
            return None
        except (psycopg.Error, KafkaException, BufferError) as exc:  # the publish goes on
            log.warning(
                "IAM clock tick failed",
                extra={"institution": self.institution, "error": str(exc)},
            )
            return None

    def _tick(
        self,
        conn: psycopg.Connection[Any],
        key: KeyPair,
        after_ms: int,
        appended_ms: int,
        message: bytes,
    ) -> bytes | None:
        chain = self._chain(conn, key)
        if chain is None or chain[2] is None or final_after(chain[1], after_ms):
            return None  # no chain or no IAM key on it; or a block after the time: no wait
        chain_id, latest_ms, nonce = chain[0], chain[1], chain[2]
        # idle: whoever holds the row decides (and sends) for the whole institution
        claim = conn.execute("SELECT claimed_ms FROM iam_clock_ticks FOR UPDATE").fetchone()
        if claim is None or not tick_due(
            latest_ms=latest_ms, claimed_ms=int(claim[0]), after_ms=after_ms
        ):
            return None
        args = tick_args(self.institution, appended_ms, sha256(message))
        raw = sign_tx(key, chain_id=chain_id, nonce=nonce, operation=TICK_OPERATION, args=args)
        if not self._send(key, raw):
            return None  # the claim is not recorded: the next publish tries again
        conn.execute("UPDATE iam_clock_ticks SET claimed_ms = %s", (appended_ms,))
        tx_id = parse_tx(raw).tx_id
        TICKS.labels(self.institution).inc()
        log.info(
            "IAM clock tick sent",
            extra={
                "institution": self.institution,
                "tx_id": tx_id.hex(),
                "nonce": nonce,
                "latest_block_ms": latest_ms,
                "needed_after_ms": after_ms,
            },
        )
        return tx_id

    def _chain(
        self, conn: psycopg.Connection[Any], key: KeyPair
    ) -> tuple[str, int, int | None] | None:
        """The projected chain's id, the running maximum of its header stamps (what the
        readers decide by, D56) and the IAM key's next nonce; None if no chain is there."""
        params = {"key": key.key_id, "role": SERVICE_ROLE, "institution": self.institution}
        row = conn.execute(_CHAIN, {**params, "seen": self.seen.height}).fetchone()
        if row is not None and int(row[1]) < self.seen.height:
            # the chain tables were rebuilt under us (as ChainSigners.clock): read them again
            self.seen.forget()
            row = conn.execute(_CHAIN, {**params, "seen": self.seen.height}).fetchone()
        if row is None:
            return None
        latest_ms = self.seen.extend(int(row[1]), None if row[2] is None else int(row[2]))
        return str(row[0]), latest_ms, None if row[3] is None else int(row[3])

    def _send(self, key: KeyPair, raw: bytes) -> bool:
        delivered, failures = produce_flushed(
            self.producer, self.tx_topic, [(key.key_id, raw)], self.timeout_s
        )
        if failures or not delivered:
            log.warning(
                "IAM clock tick not delivered",
                extra={"institution": self.institution, "error": str(failures or "timeout")},
            )
            return False
        return True
