"""``pantheon simulate``: a realistic IoT workload against the local consortium.

Usage::

    pantheon simulate --rate 50 --seconds 60 --institutions alpha,beta
    pantheon simulate --json            # until Ctrl-C, then a JSON summary on stdout

Theory of operation
-------------------
* **Senders.** Every simulated institution sends with two keys: its *governance* key (from
  ``<state>/consortium/keys/<inst>.json``; only for proposals and votes) and a *service* key,
  the identity of its IoT backend, kept in ``<state>/simulate/keys/<inst>.json`` (0600, made
  on first use) and registered on chain by the governance key at start (``RegisterIdentity``
  kind ``SERVICE``; ``ALREADY_EXISTS`` on later runs is fine). The service key anchors
  readings, registers devices and registers and transfers assets.
* **Workload** (:class:`Planner`, pure and seeded, no I/O): mostly ``AnchorData`` of a batch
  of generated sensor readings (the SHA-256 of their canonical JSON; the readings themselves
  stay off chain, as the data access proxy would keep them), now and then ``RegisterIdentity``
  of a new device (role ``DEVICE``), ``RegisterAsset`` and ``TransferAsset`` of an asset the
  sender's institution owns to another simulated institution's service key, and rarely a
  ``ProposeMember`` of a fictitious institution that the other institutions then vote
  *down* (``CastVote approve=false``), so the local validator set never grows (an admitted
  member without a validator would raise the quorum and could stall finality). Proposals are
  skipped when the proposer's own yes vote would already pass them.
* **Pacing.** Transactions are sent at ``--rate`` per second (never in bursts to catch up)
  for ``--seconds`` or until SIGINT/SIGTERM, then the receipts still outstanding are awaited
  for at most ``--drain`` seconds and a summary is printed.
* **Nonces.** The chain wants strictly sequential nonces per sender and a rejected
  transaction does not use its nonce up, so one rejection makes every later transaction of
  that sender in flight fail with ``BAD_NONCE``. Each sender starts from the chain's next
  nonce as projected into the institution's database (``chain.keys.next_nonce``). After any
  rejection (or a receipt that does not come) the sender pauses, waits until its
  transactions in flight are settled, and resumes from ``max(next nonce in the database,
  1 + highest nonce accepted)``.
* **Receipts** (outcomes verified from certified blocks against the genesis, decisions D22)
  come from one shared :class:`streams.sdk.ReceiptWatcher` started before the first
  transaction; accepted and rejected counts (by result code) come only from receipts.
* **Display.** With stderr a terminal, one progress line refreshed about once a second;
  otherwise nothing until the final summary (text on stderr, or JSON on stdout with
  ``--json``).
"""

from __future__ import annotations

from infra.simulate.cli import build_parser, db_nonce_lookup, load_governance_key, main, service_key
from infra.simulate.planner import (
    DEFAULT_WEIGHTS,
    GOVERNANCE,
    KINDS,
    SERVICE,
    PlannedTx,
    Planner,
    SenderId,
    canonical_json,
    proposal_passes_alone,
    readings_batch,
    rejections_needed,
)
from infra.simulate.runner import NonceLookup, SimConfig, Simulator
from infra.simulate.stats import Stats, format_summary

__all__ = [
    "DEFAULT_WEIGHTS",
    "GOVERNANCE",
    "KINDS",
    "SERVICE",
    "NonceLookup",
    "PlannedTx",
    "Planner",
    "SenderId",
    "SimConfig",
    "Simulator",
    "Stats",
    "build_parser",
    "canonical_json",
    "db_nonce_lookup",
    "format_summary",
    "load_governance_key",
    "main",
    "proposal_passes_alone",
    "readings_batch",
    "rejections_needed",
    "service_key",
]
