"""The pure workload planner of ``pantheon simulate``, driven through the real state machine."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from typing import Any

import pytest

from infra.simulate import planner as simulate
from infra.simulate.planner import GOVERNANCE, SERVICE, PlannedTx, Planner, SenderId
from ledger.governance import prop_key
from ledger.key_proofs import register_identity_args
from ledger.keys import KeyPair
from ledger.members import member_ids
from ledger.results import ResultCode
from ledger.tx import parse_tx
from tests.unit.chain_helpers import CHAIN, Driver, consortium, key


def _planner(institutions: list[str], *, seed: int = 7, members: int = 4, **kw: Any) -> Planner:
    return Planner(
        {i: key(f"svc/{i}").key_id for i in institutions},
        rng=random.Random(seed),
        run_id="test",
        members=members,
        chain_id=CHAIN,
        **kw,
    )


def _all_ready(institutions: list[str]) -> set[SenderId]:
    return {(i, role) for i in institutions for role in (GOVERNANCE, SERVICE)}


def test_rejection_threshold_matches_the_governance_rule() -> None:
    # (n - no) * den <= n * num closes a proposal as rejected (ledger.governance._tally)
    assert simulate.rejections_needed(4, 2, 3) == 2
    assert simulate.rejections_needed(3, 2, 3) == 1
    assert simulate.rejections_needed(7, 2, 3) == 3
    assert simulate.rejections_needed(2, 1, 2) == 1
    assert simulate.proposal_passes_alone(1, 2, 3)
    assert not simulate.proposal_passes_alone(2, 2, 3)


def test_planner_is_deterministic_for_a_seed() -> None:
    insts = ["a", "b"]

    def run(seed: int) -> list[tuple[str, str]]:
        p = _planner(insts, seed=seed)
        out = []
        for _ in range(200):
            tx = p.plan(_all_ready(insts), 1_700_000_000_000)
            assert tx is not None
            out.append((tx.kind, json.dumps(tx.args, default=bytes.hex, sort_keys=True)))
            p.settled(tx, hashlib.sha256(str(len(out)).encode()).digest(), ResultCode.OK)
        return out

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_anchor_hashes_the_generated_readings() -> None:
    p = _planner(["a"], weights={"anchor": 1.0})
    tx = p.plan(_all_ready(["a"]), 1_700_000_000_000)
    assert tx is not None and tx.operation == "AnchorData" and tx.sender == ("a", SERVICE)
    meta = json.loads(tx.args["metadata"])
    assert meta["count"] == 10 and meta["kind"] == "sensor-readings"
    # the same seed regenerates the same readings, whose canonical JSON is what is anchored
    rng = random.Random(7)
    rng.choices(["anchor"], weights=[1.0])
    rng.choice(["a"])
    rng.randrange(16)
    readings = simulate.readings_batch(rng, meta["device"], meta["from_ms"], 10)
    assert hashlib.sha256(simulate.canonical_json(readings)).digest() == tx.args["sha256"]
    assert len(tx.args["data_id"]) <= 128


def test_nothing_is_planned_for_paused_senders() -> None:
    p = _planner(["a", "b"])
    assert p.plan(set(), 0) is None
    for _ in range(100):
        tx = p.plan({("b", SERVICE)}, 0)
        assert tx is not None and tx.sender == ("b", SERVICE)
        p.settled(tx, b"\x00" * 32, ResultCode.OK)


def test_transfers_only_confirmed_assets_and_get_them_back_on_bad_nonce() -> None:
    p = _planner(["a", "b"], weights={"asset": 1.0, "transfer": 1.0})
    ready = _all_ready(["a", "b"])
    first = p.plan(ready, 0)
    assert first is not None and first.kind == "asset"  # nothing owned yet: no transfer
    p.settled(first, b"\x01" * 32, ResultCode.OK)
    assert p.owned == {first.asset_id: first.sender[0]}
    transfer: PlannedTx | None = None
    while transfer is None or transfer.kind != "transfer":
        transfer = p.plan(ready, 0)
        assert transfer is not None
        if transfer.kind == "asset":
            p.settled(transfer, b"\x02" * 32, ResultCode.BAD_NONCE)  # never owned
    assert transfer.asset_id not in p.owned  # in flight
    p.settled(transfer, b"\x03" * 32, ResultCode.BAD_NONCE)
    assert p.owned[transfer.asset_id] == transfer.sender[0]


def test_proposals_are_skipped_when_the_proposer_alone_would_pass_them() -> None:
    p = _planner(["a"], members=1, weights={"propose": 1.0})
    assert p.plan(_all_ready(["a"]), 0) is None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_planned_workload_is_accepted_by_the_state_machine(seed: int) -> None:
    """Every planned transaction applies (OK) on the real contracts, proposals are voted
    down, and the member set never changes."""
    plan = consortium(4)
    driver = Driver(plan)
    insts = sorted(plan.keys)
    service = {i: key(f"svc/{i}") for i in insts}
    signers: dict[SenderId, KeyPair] = {}
    for i in insts:
        signers[(i, GOVERNANCE)] = driver.gov(i)
        signers[(i, SERVICE)] = service[i]
    setup = [
        driver.tx(
            driver.gov(i),
            "RegisterIdentity",
            register_identity_args(
                service[i], chain_id=CHAIN, institution_id=i, kind="SERVICE", label=f"{i}-sim"
            ),
        )
        for i in insts
    ]
    assert set(driver.codes(setup)) == {"OK"}

    weights = {"anchor": 0.4, "device": 0.15, "asset": 0.15, "transfer": 0.2, "propose": 0.1}
    planner = Planner(
        {i: k.key_id for i, k in service.items()},
        rng=random.Random(seed),
        run_id=f"s{seed}",
        members=4,
        chain_id=CHAIN,
        weights=weights,
    )
    kinds: Counter[str] = Counter()
    proposals: list[bytes] = []
    ready = set(signers)
    for _ in range(25):
        batch: dict[bytes, PlannedTx] = {}
        raws = []
        for _ in range(12):
            planned = planner.plan(ready, 1_700_000_000_000)
            assert planned is not None
            raw = driver.tx(signers[planned.sender], planned.operation, planned.args)
            batch[parse_tx(raw).tx_id] = planned
            raws.append(raw)
        executed = driver.block(raws)
        for result in executed.results:
            planned = batch[result.tx_id]
            assert result.code is ResultCode.OK, (planned.kind, result.code.name)
            kinds[planned.kind] += 1
            if planned.kind == "propose":
                proposals.append(result.tx_id)
            planner.settled(planned, result.tx_id, result.code)
    assert {"anchor", "device", "asset", "transfer", "propose", "vote"} <= set(kinds)
    state = driver.machine.state
    height = driver.blocks[-1].header.height
    assert member_ids(state, height + 1) == insts
    closed = [state.get(prop_key(pid)) for pid in proposals]
    assert all(p is not None and p["status"] == "REJECTED" for p in closed[:-1])
