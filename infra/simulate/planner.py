"""The pure workload planner of ``pantheon simulate``: seeded, no I/O (module docstring of
:mod:`infra.simulate`)."""

from __future__ import annotations

import hashlib
import json
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ledger.key_proofs import propose_member_args, register_identity_args
from ledger.keys import SEED_BYTES, KeyPair
from ledger.results import ResultCode

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
        chain_id: str,
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
        self.chain_id = chain_id
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
            args=register_identity_args(
                device,
                chain_id=self.chain_id,
                institution_id=inst,
                kind="DEVICE",
                label=f"sim-{self.run_id}-sensor-{n}",
            ),
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
            args=propose_member_args(
                gov, [op], chain_id=self.chain_id, institution_id=f"sim-{self.run_id}-{n}"
            ),
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
