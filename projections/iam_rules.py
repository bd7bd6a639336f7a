"""One signed IAM event's verdict: the rule the IAM projection and the gateway's view share.

Theory of operation
-------------------
* :func:`read_chain` reads, once per batch, what deciding needs from the certified chain
  (height, the signing keys' history, the header stamps; :mod:`projections.iam_signers`).
* :func:`judge` is the whole rule for one opened message (D21, D56): the signer, the
  broker's append time, replay by ``event_id``, a schema this topic knows, and whether the
  event's ``actor`` was allowed to act against the state folded from the events accepted
  before it (:func:`ledger.iam_authz.authorize`). It returns :data:`ACCEPTED`, a
  :class:`Held` (the chain cannot decide it yet) or a :class:`Refused`.
* The caller folds what it accepts (its tables, or memory) and keeps ``mark`` and ``seen``;
  both readers of a topic therefore decide every message alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from ledger import iam_time
from ledger.iam_authz import AuthzState, authorize
from ledger.iam_events import (
    KeyHistory,
    Opened,
    Refusal,
    decide,
    decide_appended,
    needed_height,
)
from ledger.iam_time import ChainClock, Wait
from projections.iam_handlers import HANDLERS
from projections.iam_signers import SignerPolicy

KNOWN_SCHEMAS = frozenset(HANDLERS)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainFacts:
    """What the certified chain says, read once for a batch."""

    height: int
    history: KeyHistory
    clock: ChainClock | None
    skew_ms: int


@dataclass(frozen=True, slots=True)
class Held:
    """Undecidable yet: the chain must reach ``needed`` (D21) or be stamped after
    ``after_ms`` (D56; 0: no time is waited for)."""

    needed: int
    after_ms: int


@dataclass(frozen=True, slots=True)
class Refused:
    """Never applied; ``why`` says what an unauthorized actor lacked."""

    reason: Refusal
    why: str = ""


ACCEPTED = None
Verdict = Held | Refused | None


def read_chain(
    signers: SignerPolicy, cur: psycopg.Cursor[Any], key_ids: Sequence[bytes]
) -> ChainFacts:
    """The chain's height, the history of ``key_ids`` and its header stamps."""
    height = signers.chain_height(cur)
    history = signers.history(cur, sorted(set(key_ids))) if height >= 0 else KeyHistory()
    return ChainFacts(
        height=height,
        history=history,
        clock=signers.clock(cur, height) if height >= 0 else None,
        skew_ms=iam_time.SKEW_MS,  # read now: the rebuild and the audit read the same
    )


def judge(
    item: Opened,
    *,
    stamp: tuple[int, int],
    institution: str,
    chain: ChainFacts,
    mark: int,
    seen: Callable[[str], bool],
    authz: AuthzState,
) -> Verdict:
    """The verdict on one opened message (see the module docstring)."""
    if chain.clock is None:  # no chain yet, or PinnedSigners: the key height alone
        needed = needed_height(item, mark)
        if needed > chain.height:
            return Held(needed, 0)
        refusal: Refusal | Wait | None = decide(item, institution, chain.history.at, mark, seen)
    else:  # D56: decided once the chain has a block stamped after the append time (+/- S)
        refusal = decide_appended(
            item,
            stamp=stamp,
            institution=institution,
            keys=chain.history.at,
            mark=mark,
            seen=seen,
            clock=chain.clock,
            skew_ms=chain.skew_ms,
        )
        if isinstance(refusal, Wait):
            needed = item.key_height if item.key_height > chain.height else chain.height + 1
            return Held(needed, refusal.after_ms)
    if refusal is None and item.schema not in KNOWN_SCHEMAS:
        refusal = Refusal.BAD_EVENT
    if isinstance(refusal, Refusal):
        return Refused(refusal)
    why = authorize(authz, item.schema, item.record)
    return ACCEPTED if why is None else Refused(Refusal.UNAUTHORIZED, why)
