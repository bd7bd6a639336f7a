"""The one way onto an institution's IAM topic: signed events, produced, then waited for
until their projection applied them (read-your-writes). On a chain idle for more than the
skew S the publisher first has the chain certify a block its readers need (D62,
:mod:`gateway.iam.clock_tick`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message, Producer
from psycopg_pool import ConnectionPool

from gateway.iam.clock_tick import ClockTicker, need_of
from gateway.iam.errors import NotApplied
from gateway.iam.signing import IamSigner
from gateway.iam.view import IamView
from ledger import iam_time
from projections.runner import wait_for_offset
from runtime.delivery import produce_flushed
from schemas.codec import encode


@dataclass(frozen=True, slots=True, kw_only=True)
class IamPublisher:
    """Produces events to ``topic`` and waits for the projection that applies them."""

    institution: str
    topic: str
    dsn: str
    pool: ConnectionPool[Any]
    producer: Producer
    apply_timeout_s: float
    view: IamView
    ticker: ClockTicker | None = None

    def produce(self, events: list[Any], signer: IamSigner, *, projection: str) -> None:
        """Sign each event with the institution's IAM key (D21), produce it, and return once
        ``projection`` projected and applied them all (:class:`NotApplied` otherwise)."""
        if not events:
            return
        sign = signer.signing()  # KeyNotActive (a NotApplied) before anything is sent
        results, errors = produce_flushed(
            self.producer,
            self.topic,
            [
                (event.key.encode(), sign(self.institution, encode(event.schema, event.record)))
                for event in events
            ],
            self.apply_timeout_s,
        )
        if errors or len(results) != len(events):
            raise NotApplied(f"producing to {self.topic} failed: {errors or 'timeout'}")
        last = max(m.offset() or 0 for m in results)
        self._move_clock(results, signer)
        if not wait_for_offset(self.dsn, projection, self.topic, 0, last, self.apply_timeout_s):
            raise NotApplied(f"offset {last} of {self.topic} not projected in time")
        # Projected is not applied: the readers' rule (D21) may have refused an event. The
        # view decides by the same rule, from the topic, not from a table anyone could write.
        if not self.view.wait_for(last, self.apply_timeout_s):
            raise NotApplied(f"offset {last} of {self.topic} not read by the IAM view in time")
        ids = [str(event.record["event_id"]) for event in events]
        applied = self.view.applied(ids)
        refused = sorted(set(ids) - applied)
        if refused:
            raise NotApplied(
                f"{len(refused)} of {len(ids)} events refused by the IAM projection: {refused}"
            )

    def _move_clock(self, results: list[Message], signer: IamSigner) -> None:
        """D62: readers decide a message appended at ``a`` once a certified block is stamped
        after ``a - S``; on an idle chain, have one certified (at most one tick)."""
        need = need_of([m.timestamp() for m in results], iam_time.SKEW_MS)  # S read now
        if self.ticker is None or need is None:
            return
        value = results[need.index].value()
        self.ticker.ensure_block_after(
            signer.key,
            after_ms=need.after_ms,
            appended_ms=need.appended_ms,
            message=value if isinstance(value, bytes) else b"",
        )
