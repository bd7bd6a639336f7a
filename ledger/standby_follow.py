"""When a standby follows its primary and when it takes over (D38, D52, D57).

Pure. A *following* standby (rank ``r > 0``) applies its primary's feeds of final blocks
and reads neither the tx log nor cuts blocks (D57). It turns *eager* (reads the tx log from
the offset after its last block, cuts, executes, votes) when it has been *behind* for ``r``
takeover delays without applying a block, and either

* a final block waits without a feed that gives its hash (the feed was lost, or forged, or
  a stub): the standby executes up to the highest final height it knew then; or
* its primary cast no vote on a height not final here for that long (the primary is down).

"Behind" is a final height above its own, or a tx log whose end (the shell tells it, from
a cheap watermark query) lies beyond its last block: the second covers a consortium that
cannot finalize without this institution. An eager standby follows again when its primary
votes on a height not final here, once it has caught up to the height it set out to reach.
A feed that misses the final hash is dropped and changes nothing: the real one may still
come (a forged feed can arrive first), and if none does the first rule applies.
"""

from __future__ import annotations


class StandbyClock:
    """The timers and flags of :mod:`ledger.standby_follow`; times are passed in (ms)."""

    def __init__(self) -> None:
        self.eager = False
        self.primary_heard = False  # a valid vote of its primary came since the last tick
        self.primary_seen_ms: int | None = None  # when it last came (a tick's time)
        self.waiting_since: int | None = None  # behind, without applying a block, since then
        self.catch_up_to = 0  # an eager standby follows again only from this height on
        self.tx_end = 0  # the end of the tx log as the shell last saw it

    def primary_voted(self, own_height: int) -> None:
        """Its primary voted on a height not final here (``own_height``: its last block)."""
        self.primary_heard = True
        if own_height >= self.catch_up_to:
            self.eager = False

    def take_over(self, up_to: int) -> None:
        """Turn eager, and stay so at least until height ``up_to`` is reached."""
        self.eager = True
        self.catch_up_to = up_to
        self.waiting_since = None

    def progressed(self) -> None:
        """A block was applied: no longer waiting."""
        self.waiting_since = None

    def tick(
        self, now_ms: int, *, following: bool, behind: bool, stuck_to: int, delay_ms: int
    ) -> None:
        """Time passes. ``behind``: work this standby has not done yet; ``stuck_to``: the
        highest height final here whose predecessors it could not apply, 0 if the next one is
        not final; ``delay_ms``: its rank's takeover delay."""
        if self.primary_heard or self.primary_seen_ms is None:
            self.primary_seen_ms, self.primary_heard = now_ms, False
        if not following or not behind:
            self.waiting_since = None
            return
        if self.waiting_since is None:
            self.waiting_since = now_ms
        if now_ms - self.waiting_since < delay_ms:
            return
        if stuck_to or now_ms - self.primary_seen_ms >= delay_ms:
            self.take_over(stuck_to)
