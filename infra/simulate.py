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

import argparse
import hashlib
import json
import random
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import psycopg

from infra.consortium import Consortium
from infra.invocation import pantheon
from infra.keystore import generate_key, load_genesis, load_key
from infra.postgres_server import Postgres
from infra.settings import Settings
from ledger.genesis import Genesis
from ledger.keys import SEED_BYTES, KeyPair
from ledger.outcomes import SetSource
from ledger.results import ResultCode
from projections import read
from projections.projector import database_name
from streams.sdk import LedgerClient, ReceiptWatcher, SubmitError

GOVERNANCE = "governance"
SERVICE = "service"

KINDS = ("anchor", "device", "asset", "transfer", "propose", "vote")
"""Workload kinds; ``vote`` is never drawn, only queued after an accepted proposal."""

DEFAULT_WEIGHTS: Mapping[str, float] = {
    "anchor": 0.86,
    "device": 0.06,
    "asset": 0.04,
    "transfer": 0.035,
    "propose": 0.002,
}

SenderId = tuple[str, str]
"""(institution, role): role is :data:`GOVERNANCE` or :data:`SERVICE`."""


# -- the pure workload planner ------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedTx:
    """One transaction the planner wants sent, with what it needs to learn its outcome."""

    kind: str
    sender: SenderId
    operation: str
    args: dict[str, Any]
    asset_id: str = ""
    new_owner: str = ""
    device_key_id: bytes = b""


def readings_batch(
    rng: random.Random, device: str, start_ms: int, count: int
) -> list[dict[str, Any]]:
    """``count`` plausible readings (one a minute) of one environmental sensor."""
    base_temp = rng.uniform(12.0, 28.0)
    base_hum = rng.uniform(30.0, 70.0)
    return [
        {
            "device": device,
            "ts_ms": start_ms + i * 60_000,
            "temperature_c": round(base_temp + rng.gauss(0.0, 0.4), 2),
            "humidity_pct": round(min(100.0, max(0.0, base_hum + rng.gauss(0.0, 1.5))), 1),
            "battery_v": round(3.0 + rng.random() * 0.6, 3),
        }
        for i in range(count)
    ]


def canonical_json(value: Any) -> bytes:
    """Stable JSON bytes (sorted keys, no spaces): what the anchored hash covers."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def rejections_needed(members: int, threshold_num: int, threshold_den: int) -> int:
    """How many ``no`` votes close a proposal as rejected (``(n - no) * den <= n * num``)."""
    no = 0
    while (members - no) * threshold_den > members * threshold_num:
        no += 1
    return no


def proposal_passes_alone(members: int, threshold_num: int, threshold_den: int) -> bool:
    """True if the proposer's own yes vote already passes a proposal (then we never propose)."""
    return threshold_den > members * threshold_num


class Planner:
    """Chooses the next transaction; learns outcomes through :meth:`settled`. No I/O.

    ``service_key_ids`` maps each simulated institution to its service key id (transfer
    targets); ``members``/``threshold_*`` describe the consortium's governance.
    """

    def __init__(
        self,
        service_key_ids: Mapping[str, bytes],
        *,
        rng: random.Random,
        run_id: str,
        members: int,
        threshold_num: int = 2,
        threshold_den: int = 3,
        weights: Mapping[str, float] = DEFAULT_WEIGHTS,
        readings_per_anchor: int = 10,
    ) -> None:
        if not service_key_ids:
            raise ValueError("at least one institution must be simulated")
        unknown = set(weights) - set(KINDS)
        if unknown or "vote" in weights:
            raise ValueError(f"unknown or non-drawable workload kinds: {sorted(unknown)}")
        self.institutions = sorted(service_key_ids)
        self.service_key_ids = dict(service_key_ids)
        self.rng = rng
        self.run_id = run_id
        self.members = members
        self.threshold = (threshold_num, threshold_den)
        self.weights = dict(weights)
        self.readings_per_anchor = readings_per_anchor
        self.seq = 0
        self.owned: dict[str, str] = {}  # asset id -> owning institution (confirmed)
        self.devices: dict[str, list[bytes]] = {i: [] for i in self.institutions}
        self.votes: deque[PlannedTx] = deque()
        self.proposal_open = False
        self.votes_pending = 0

    def _next_id(self) -> int:
        self.seq += 1
        return self.seq

    def _kinds_possible(self, ready: set[SenderId]) -> dict[str, float]:
        service_ready = any((i, SERVICE) in ready for i in self.institutions)
        possible: dict[str, float] = {}
        for kind, weight in self.weights.items():
            if weight <= 0:
                continue
            allowed = {
                "anchor": service_ready,
                "device": service_ready,
                "asset": service_ready,
                "transfer": kind == "transfer" and bool(self._transferable(ready)),
                "propose": kind == "propose" and self._can_propose(ready),
            }
            if allowed.get(kind, False):
                possible[kind] = weight
        return possible

    def _transferable(self, ready: set[SenderId]) -> list[str]:
        return sorted(a for a, owner in self.owned.items() if (owner, SERVICE) in ready)

    def _can_propose(self, ready: set[SenderId]) -> bool:
        num, den = self.threshold
        return (
            not self.proposal_open
            and not proposal_passes_alone(self.members, num, den)
            and any((i, GOVERNANCE) in ready for i in self.institutions)
        )

    def plan(self, ready: set[SenderId], now_ms: int) -> PlannedTx | None:
        """The next transaction among senders in ``ready``; None if none can send."""
        for _ in range(len(self.votes)):
            vote = self.votes.popleft()
            if vote.sender in ready:
                return vote
            self.votes.append(vote)
        possible = self._kinds_possible(ready)
        if not possible:
            return None
        kinds = sorted(possible)
        kind = self.rng.choices(kinds, weights=[possible[k] for k in kinds])[0]
        if kind == "transfer":
            return self._transfer(ready)
        if kind == "propose":
            return self._propose(ready)
        inst = self.rng.choice([i for i in self.institutions if (i, SERVICE) in ready])
        if kind == "anchor":
            return self._anchor(inst, now_ms)
        if kind == "device":
            return self._device(inst)
        return self._asset(inst)

    def _anchor(self, inst: str, now_ms: int) -> PlannedTx:
        n = self._next_id()
        devices = self.devices[inst]
        device = (
            self.rng.choice(devices).hex()[:16]
            if devices
            else f"{inst}-sensor-{self.rng.randrange(16):02d}"
        )
        readings = readings_batch(
            self.rng, device, now_ms - self.readings_per_anchor * 60_000, self.readings_per_anchor
        )
        metadata = {
            "kind": "sensor-readings",
            "device": device,
            "count": len(readings),
            "from_ms": readings[0]["ts_ms"],
            "to_ms": readings[-1]["ts_ms"],
            "content_type": "application/json",
        }
        return PlannedTx(
            kind="anchor",
            sender=(inst, SERVICE),
            operation="AnchorData",
            args={
                "data_id": f"sim/{self.run_id}/{inst}/readings-{n}",
                "sha256": hashlib.sha256(canonical_json(readings)).digest(),
                "metadata": json.dumps(metadata, sort_keys=True),
            },
        )

    def _device(self, inst: str) -> PlannedTx:
        n = self._next_id()
        device = KeyPair.from_seed(self.rng.randbytes(SEED_BYTES))
        return PlannedTx(
            kind="device",
            sender=(inst, SERVICE),
            operation="RegisterIdentity",
            args={
                "public_key": device.public_key,
                "kind": "DEVICE",
                "label": f"sim-{self.run_id}-sensor-{n}",
            },
            device_key_id=device.key_id,
        )

    def _asset(self, inst: str) -> PlannedTx:
        n = self._next_id()
        asset_id = f"sim/{self.run_id}/asset-{n}"
        metadata = {
            "type": self.rng.choice(["gateway", "sensor-kit", "pallet", "container", "meter"]),
            "serial": f"SN-{self.rng.randrange(10**8):08d}",
        }
        return PlannedTx(
            kind="asset",
            sender=(inst, SERVICE),
            operation="RegisterAsset",
            args={"asset_id": asset_id, "metadata": json.dumps(metadata, sort_keys=True)},
            asset_id=asset_id,
        )

    def _transfer(self, ready: set[SenderId]) -> PlannedTx:
        asset_id = self.rng.choice(self._transferable(ready))
        owner = self.owned.pop(asset_id)  # in flight: not transferable again until settled
        others = [i for i in self.institutions if i != owner] or [owner]
        new_owner = self.rng.choice(others)
        return PlannedTx(
            kind="transfer",
            sender=(owner, SERVICE),
            operation="TransferAsset",
            args={"asset_id": asset_id, "new_owner_key_id": self.service_key_ids[new_owner]},
            asset_id=asset_id,
            new_owner=new_owner,
        )

    def _propose(self, ready: set[SenderId]) -> PlannedTx:
        n = self._next_id()
        inst = self.rng.choice([i for i in self.institutions if (i, GOVERNANCE) in ready])
        gov, op = (KeyPair.from_seed(self.rng.randbytes(SEED_BYTES)) for _ in range(2))
        self.proposal_open = True
        return PlannedTx(
            kind="propose",
            sender=(inst, GOVERNANCE),
            operation="ProposeMember",
            args={
                "institution_id": f"sim-{self.run_id}-{n}",
                "governance_public_key": gov.public_key,
                "operator_public_keys": [op.public_key],
            },
        )

    def settled(self, planned: PlannedTx, tx_id: bytes, code: ResultCode | None) -> None:
        """Learn the outcome of ``planned`` (``code`` None: no receipt came)."""
        ok = code is ResultCode.OK
        if planned.kind == "asset" and ok:
            self.owned[planned.asset_id] = planned.sender[0]
        elif planned.kind == "transfer":
            if ok:
                self.owned[planned.asset_id] = planned.new_owner
            elif code is not None and code not in (ResultCode.NOT_FOUND, ResultCode.FORBIDDEN):
                self.owned[planned.asset_id] = planned.sender[0]  # e.g. BAD_NONCE: still ours
        elif planned.kind == "device" and ok:
            self.devices[planned.sender[0]].append(planned.device_key_id)
        elif planned.kind == "propose":
            if ok:
                self._queue_votes(planned.sender[0], tx_id)
            else:
                self.proposal_open = False
        elif planned.kind == "vote":
            self.votes_pending -= 1
            if self.votes_pending <= 0:
                self.proposal_open = False

    def _queue_votes(self, proposer: str, proposal_id: bytes) -> None:
        num, den = self.threshold
        voters = [i for i in self.institutions if i != proposer]
        voters = voters[: rejections_needed(self.members, num, den)]
        for voter in voters:
            self.votes.append(
                PlannedTx(
                    kind="vote",
                    sender=(voter, GOVERNANCE),
                    operation="CastVote",
                    args={"proposal_id": proposal_id, "approve": False},
                )
            )
        self.votes_pending = len(voters)
        # with no simulated voter the proposal stays open until it expires; do not wait for it
        self.proposal_open = bool(voters)


# -- statistics and display ---------------------------------------------------------------


@dataclass(slots=True)
class Stats:
    """Counters of one run; ``rates`` over the last few seconds."""

    started: float = field(default_factory=time.monotonic)
    sent: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    timeouts: int = 0
    resyncs: int = 0
    delivery_failures: int = 0
    in_flight: int = 0
    _history: deque[tuple[float, int, int]] = field(default_factory=deque)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def sample(self, now: float) -> tuple[float, float]:
        """(sent/s, accepted/s) over the last ~5 s."""
        if not self._history:
            self._history.append((self.started, 0, 0))
        self._history.append((now, self.sent, self.accepted))
        while len(self._history) > 2 and now - self._history[0][0] > 5.0:
            self._history.popleft()
        t0, s0, a0 = self._history[0]
        span = now - t0
        if span <= 0:
            return 0.0, 0.0
        return (self.sent - s0) / span, (self.accepted - a0) / span

    def line(self, now: float) -> str:
        """The one-line progress display."""
        sent_rate, ok_rate = self.sample(now)
        return (
            f"simulate {now - self.started:6.1f}s  sent {self.sent} ({sent_rate:.1f}/s)  "
            f"accepted {self.accepted} ({ok_rate:.1f}/s)  rejected {self.rejected_total}  "
            f"in flight {self.in_flight}  resyncs {self.resyncs}"
        )

    def summary(self, now: float) -> dict[str, Any]:
        """The final summary (also the ``--json`` output)."""
        elapsed = max(now - self.started, 1e-9)
        return {
            "seconds": round(elapsed, 3),
            "sent": self.sent,
            "accepted": self.accepted,
            "rejected": self.rejected_total,
            "rejected_by_code": dict(sorted(self.rejected.items())),
            "no_receipt": self.timeouts,
            "delivery_failures": self.delivery_failures,
            "resyncs": self.resyncs,
            "sent_per_second": round(self.sent / elapsed, 2),
            "accepted_per_second": round(self.accepted / elapsed, 2),
            "by_kind": dict(sorted(self.by_kind.items())),
        }


def format_summary(summary: Mapping[str, Any]) -> str:
    """The text summary printed on stderr."""
    rejected = ", ".join(f"{k} {v}" for k, v in summary["rejected_by_code"].items()) or "none"
    kinds = ", ".join(f"{k} {v}" for k, v in summary["by_kind"].items()) or "none"
    return (
        f"simulate: {summary['sent']} sent, {summary['accepted']} accepted, "
        f"{summary['rejected']} rejected ({rejected}), {summary['no_receipt']} without receipt "
        f"in {summary['seconds']:.1f}s ({summary['sent_per_second']}/s sent, "
        f"{summary['accepted_per_second']}/s accepted); {summary['resyncs']} nonce resyncs; "
        f"by kind: {kinds}"
    )


# -- the I/O shell ------------------------------------------------------------------------


NonceLookup = Callable[[str, bytes], int | None]
"""(institution, key id) -> the chain's next nonce of that key, or None if unknown now."""


@dataclass(slots=True)
class _Flight:
    planned: PlannedTx
    nonce: int
    sent_at: float


@dataclass(slots=True)
class _Sender:
    institution: str
    role: str
    key: KeyPair
    client: LedgerClient
    inflight: dict[bytes, _Flight] = field(default_factory=dict)
    paused_at: float | None = None
    base_nonce: int = 0
    best_ok: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SimConfig:
    """What :class:`Simulator` needs; :func:`main` builds it from the local consortium."""

    bootstrap: str
    prefix: str
    chain_id: str
    genesis: Genesis  # the trust anchor of every outcome (decisions D22)
    governance_keys: Mapping[str, KeyPair]
    service_keys: Mapping[str, KeyPair]
    members: int
    threshold_num: int = 2
    threshold_den: int = 3
    rate: float = 20.0
    seconds: float | None = None
    drain: float = 15.0
    receipt_timeout: float = 60.0
    seed: int | None = None
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    validator_sets: SetSource | None = None  # candidates after membership changes


class Simulator:
    """Sends the planned workload, follows receipts, resyncs nonces; see the module doc."""

    def __init__(
        self,
        config: SimConfig,
        nonce_lookup: NonceLookup,
        *,
        progress: TextIO | None = None,
    ) -> None:
        self.config = config
        self.nonce_lookup = nonce_lookup
        self.progress = progress
        self.stop = threading.Event()
        self.stats = Stats()
        rng = random.Random(config.seed)
        self.planner = Planner(
            {i: k.key_id for i, k in config.service_keys.items()},
            rng=rng,
            run_id=rng.randbytes(4).hex(),
            members=config.members,
            threshold_num=config.threshold_num,
            threshold_den=config.threshold_den,
            weights=config.weights,
        )
        self.senders: dict[SenderId, _Sender] = {}
        self.watcher: ReceiptWatcher | None = None

    # lifecycle

    def run(self) -> dict[str, Any]:
        """Run until ``seconds`` elapse or :attr:`stop` is set; return the summary."""
        cfg = self.config
        self.watcher = ReceiptWatcher(
            cfg.bootstrap, genesis=cfg.genesis, prefix=cfg.prefix, validator_sets=cfg.validator_sets
        )
        try:
            for inst in sorted(cfg.service_keys):
                for role, key in (
                    (GOVERNANCE, cfg.governance_keys[inst]),
                    (SERVICE, cfg.service_keys[inst]),
                ):
                    client = LedgerClient(
                        cfg.bootstrap, key, cfg.chain_id, prefix=cfg.prefix, watcher=self.watcher
                    )
                    sender = _Sender(inst, role, key, client)
                    self.senders[(inst, role)] = sender
                    self._sync_nonce(sender, initial=True)
            self._register_services()
            self.stats = Stats()
            self._loop()
            return self._finish()
        finally:
            self._close()

    def _register_services(self) -> None:
        """Register each service key (idempotent: ALREADY_EXISTS is fine). The governance
        key may be used by other processes too (gateway, batcher): on BAD_NONCE, resync and
        try again, a few times."""
        for inst, key in sorted(self.config.service_keys.items()):
            gov = self.senders[(inst, GOVERNANCE)]
            for attempt in range(5):
                if self.stop.is_set():
                    return
                nonce = gov.client.next_nonce
                receipt = gov.client.submit_and_wait(
                    "RegisterIdentity",
                    {"public_key": key.public_key, "kind": "SERVICE", "label": f"{inst}-simulator"},
                    timeout=60.0,
                )
                if receipt.code is ResultCode.OK:
                    gov.best_ok = nonce
                    break
                gov.client.reset_nonce(nonce)
                if receipt.code is ResultCode.ALREADY_EXISTS:
                    break
                if receipt.code is not ResultCode.BAD_NONCE:
                    raise RuntimeError(
                        f"cannot register the simulator's service key of {inst}: "
                        f"{receipt.code.name}"
                    )
                time.sleep(0.5 * (attempt + 1))  # let the projection catch up
                self._sync_nonce(gov, initial=True)
            else:
                raise RuntimeError(f"the governance nonce of {inst} keeps changing (BAD_NONCE)")

    def _close(self) -> None:
        for sender in self.senders.values():
            try:
                sender.client.close(timeout=5.0)
            except SubmitError as exc:  # messages undelivered at the end
                self.stats.delivery_failures += len(exc.failures) or 1
        if self.watcher is not None:
            self.watcher.close()

    # the loop

    def _loop(self) -> None:
        cfg = self.config
        interval = 1.0 / cfg.rate
        start = time.monotonic()
        deadline = None if cfg.seconds is None else start + cfg.seconds
        next_send = start
        next_display = start + 1.0
        next_receipts = start
        while not self.stop.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if now >= next_receipts:
                self._collect(now)
                next_receipts = now + 0.05
            sent_now = 0
            while next_send <= now and sent_now < 1000 and not self.stop.is_set():
                if not self._send_one(now):
                    next_send = now + 0.05  # every sender paused: try again shortly
                    break
                sent_now += 1
                next_send += interval
            if now - next_send > 1.0:
                next_send = now  # fell behind: do not burst to catch up
            if now >= next_display:
                self._display(now)
                next_display = now + 1.0
            time.sleep(max(0.0, min(next_send, next_receipts, next_display) - time.monotonic()))
        self._drain()

    def _ready(self) -> set[SenderId]:
        return {sid for sid, s in self.senders.items() if s.paused_at is None}

    def _send_one(self, now: float) -> bool:
        planned = self.planner.plan(self._ready(), int(time.time() * 1000))
        if planned is None:
            return False
        sender = self.senders[planned.sender]
        nonce = sender.client.next_nonce
        try:
            tx_id = sender.client.submit(planned.operation, planned.args)
        except SubmitError:  # queue stayed full, or refused: settle as unsent, resync
            self.stats.delivery_failures += 1
            self.planner.settled(planned, b"", None)
            sender.paused_at = now
            return True
        sender.inflight[tx_id] = _Flight(planned, nonce, now)
        self.stats.sent += 1
        self.stats.by_kind[planned.kind] += 1
        return True

    def _collect(self, now: float) -> None:
        watcher = self.watcher
        assert watcher is not None
        if not watcher.alive:
            raise RuntimeError("the receipt watcher stopped")
        in_flight = 0
        for sender in self.senders.values():
            for tx_id, flight in list(sender.inflight.items()):
                receipt = watcher.get(tx_id)
                if receipt is None:
                    if now - flight.sent_at > self.config.receipt_timeout:
                        del sender.inflight[tx_id]
                        self.stats.timeouts += 1
                        self.planner.settled(flight.planned, tx_id, None)
                        sender.paused_at = sender.paused_at or now
                    continue
                del sender.inflight[tx_id]
                self.planner.settled(flight.planned, tx_id, receipt.code)
                if receipt.code is ResultCode.OK:
                    self.stats.accepted += 1
                    sender.best_ok = max(sender.best_ok or 0, flight.nonce)
                else:
                    self.stats.rejected[receipt.code.name] += 1
                    sender.paused_at = sender.paused_at or now  # later nonces will fail
            paused = sender.paused_at
            if paused is not None and not sender.inflight and now - paused >= 0.5:
                self._sync_nonce(sender)
            in_flight += len(sender.inflight)
        self.stats.in_flight = in_flight

    def _sync_nonce(self, sender: _Sender, *, initial: bool = False) -> None:
        from_chain = self.nonce_lookup(sender.institution, sender.key.key_id)
        from_receipts = sender.base_nonce if sender.best_ok is None else sender.best_ok + 1
        if from_chain is None and initial:
            from_chain = 0
        nonce = max(from_chain or 0, from_receipts)
        sender.client.reset_nonce(nonce)
        sender.base_nonce = nonce
        sender.best_ok = None
        sender.paused_at = None
        if not initial:
            self.stats.resyncs += 1

    def _drain(self) -> None:
        deadline = time.monotonic() + self.config.drain
        next_display = time.monotonic()
        while time.monotonic() < deadline:
            now = time.monotonic()
            self._collect(now)
            if not self.stats.in_flight:
                break
            if now >= next_display:
                self._display(now)
                next_display = now + 1.0
            time.sleep(0.1)
        for sender in self.senders.values():
            self.stats.timeouts += len(sender.inflight)
            sender.inflight.clear()
        self.stats.in_flight = 0

    def _display(self, now: float) -> None:
        if self.progress is not None:
            self.progress.write("\r\x1b[2K" + self.stats.line(now))
            self.progress.flush()

    def _finish(self) -> dict[str, Any]:
        if self.progress is not None:
            self.progress.write("\r\x1b[2K")
            self.progress.flush()
        return self.stats.summary(time.monotonic())


# -- the local consortium -----------------------------------------------------------------


def load_governance_key(path: Path) -> KeyPair:
    """The governance key of an institution keystore (``pantheon genesis create``)."""
    mode = path.stat().st_mode
    if mode & 0o077:
        raise ValueError(f"{path} is readable by others (mode {mode & 0o777:o}); chmod 600")
    doc = json.loads(path.read_text())
    return KeyPair.from_seed(bytes.fromhex(doc["governance"]["seed"]))


def service_key(path: Path) -> KeyPair:
    """The simulator's service key of one institution, created (0600) on first use."""
    return load_key(path) if path.exists() else generate_key(path)


def db_nonce_lookup(dsns: Mapping[str, str]) -> NonceLookup:
    """Read ``chain.keys.next_nonce`` from the institution's projected database."""

    def lookup(institution: str, key_id: bytes) -> int | None:
        try:
            with psycopg.connect(dsns[institution], connect_timeout=3) as conn:
                row = conn.execute(
                    "SELECT next_nonce FROM chain.keys WHERE key_id = %s", (key_id,)
                ).fetchone()
        except psycopg.Error:
            return None
        return 0 if row is None else int(row[0])

    return lookup


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``pantheon simulate``."""
    p = argparse.ArgumentParser(
        prog="pantheon simulate",
        description="send a realistic IoT workload to the local consortium",
    )
    p.add_argument("--rate", type=float, default=20.0, help="transactions per second (20)")
    p.add_argument("--seconds", type=float, default=None, help="run time (default: until Ctrl-C)")
    p.add_argument(
        "--institutions", default="", help="comma-separated subset of senders (default: all)"
    )
    p.add_argument("--drain", type=float, default=15.0, help="seconds to await receipts at the end")
    p.add_argument("--seed", type=int, default=None, help="seed of the workload (reproducible)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    return p


def _config_from_local(args: argparse.Namespace) -> tuple[SimConfig, NonceLookup]:
    settings = Settings.from_env()
    consortium = Consortium(settings)
    members = consortium.institutions()
    if not members:
        raise ValueError(f"no consortium in {consortium.home}; start it with `{pantheon('up')}`")
    wanted = [i.strip() for i in args.institutions.split(",") if i.strip()] or members
    unknown = sorted(set(wanted) - set(members))
    if unknown:
        raise ValueError(f"not members of the local consortium: {', '.join(unknown)}")
    genesis = load_genesis(consortium.genesis_file)
    sim_keys = settings.state_dir / "simulate" / "keys"
    postgres = Postgres(settings)
    config = SimConfig(
        bootstrap=settings.bootstrap_servers,
        prefix=settings.topic_prefix,
        chain_id=genesis.params.chain_id,
        genesis=genesis,
        validator_sets=read.validator_set_source(postgres.dsn(database_name(wanted[0]))),
        governance_keys={
            i: load_governance_key(consortium.home / "keys" / f"{i}.json") for i in wanted
        },
        service_keys={i: service_key(sim_keys / f"{i}.json") for i in wanted},
        members=len(members),
        threshold_num=genesis.params.threshold_num,
        threshold_den=genesis.params.threshold_den,
        rate=args.rate,
        seconds=args.seconds,
        drain=args.drain,
        seed=args.seed,
    )
    return config, db_nonce_lookup({i: postgres.dsn(database_name(i)) for i in wanted})


def main(argv: Sequence[str] | None = None) -> int:
    """``pantheon simulate``: exit 0 after a clean stop (time up, SIGINT or SIGTERM)."""
    args = build_parser().parse_args(argv)
    if args.rate <= 0:
        print("pantheon simulate: error: --rate must be positive", file=sys.stderr)
        return 2
    try:
        config, lookup = _config_from_local(args)
    except (ValueError, OSError, KeyError) as exc:
        print(f"pantheon simulate: error: {exc}", file=sys.stderr)
        return 1
    progress = sys.stderr if sys.stderr.isatty() else None
    sim = Simulator(config, lookup, progress=progress)

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        sim.stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = sim.run()
    except Exception as exc:
        print(f"pantheon simulate: error: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
