"""An IAM change on an idle chain moves the chain's clock itself: one signed tick (D62).

Theory of operation
-------------------
* Readers decide an IAM event the broker appended at ``a`` only once the certified chain has
  a block stamped after ``a - S`` (D56, :mod:`ledger.iam_time`), and blocks are cut only when
  transactions arrive (:mod:`ledger.cutter`). So on a chain without transactions for more
  than ``S`` an honest change would wait for somebody else's transaction.
* After the publisher's events are on the topic (it knows ``a`` from the delivery reports),
  :meth:`ClockTicker.ensure_block_after` looks at the chain projected in the institution's
  database. If its last certified block is stamped after ``a - S``, or a tick was already
  sent for an event appended after ``a - S`` (:func:`tick_due`), nothing is sent. Otherwise
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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import KafkaException, Producer
from prometheus_client import Counter
from psycopg_pool import ConnectionPool

from ledger.hashing import sha256
from ledger.iam_events import SERVICE_ROLE
from ledger.iam_time import GENESIS_MS, LOG_APPEND_TIME
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

#: The projected chain: its id, the last certified block's stamp, the IAM key's next nonce
#: (NULL unless it is an active SERVICE key of the institution there).
_CHAIN = (
    "SELECT m.chain_id, coalesce(b.timestamp_ms, %(genesis)s), k.next_nonce "
    "FROM chain.meta m LEFT JOIN chain.blocks b ON b.height = m.height "
    "LEFT JOIN chain.keys k ON k.key_id = %(key)s AND k.active AND k.role = %(role)s "
    "AND k.institution_id = %(institution)s"
)


def tick_due(*, latest_ms: int, claimed_ms: int, after_ms: int) -> bool:
    """Whether a tick must be sent so that a certified block is stamped after ``after_ms``:
    the last certified block is not, and no tick was sent for an event appended after it."""
    return latest_ms <= after_ms and claimed_ms <= after_ms


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

    def __post_init__(self) -> None:
        TICKS.labels(self.institution)  # the series exists from the start, at 0

    def ensure_block_after(
        self, key: KeyPair, *, after_ms: int, appended_ms: int, message: bytes
    ) -> bytes | None:
        """Make the chain certify a block stamped after ``after_ms`` (``appended_ms - S`` of
        the IAM ``message`` that waits), unless one is or will be; the tick's tx id if one
        was sent."""
        try:
            with self.pool.connection() as conn, conn.transaction():
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
        params = {
            "genesis": GENESIS_MS,
            "key": key.key_id,
            "role": SERVICE_ROLE,
            "institution": self.institution,
        }
        chain = conn.execute(_CHAIN, params).fetchone()
        if chain is None or chain[2] is None or int(chain[1]) > after_ms:
            return None  # no chain or no IAM key on it; or a block after the time: no wait
        chain_id, latest_ms, nonce = str(chain[0]), int(chain[1]), int(chain[2])
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
                "last_block_ms": latest_ms,
                "needed_after_ms": after_ms,
            },
        )
        return tx_id

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
