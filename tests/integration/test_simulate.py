"""``pantheon simulate``'s engine against real validators: every kind of transaction is
accepted, and a sender that starts from a stale nonce resyncs after BAD_NONCE."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.consortium import Consortium
from infra.simulate import SimConfig, Simulator
from ledger.key_proofs import register_identity_args
from ledger.keys import KeyPair
from ledger.members import key_key, member_ids

pytestmark = pytest.mark.integration


@pytest.fixture
def consortium(bootstrap: str, unique: str, tmp_path: Path) -> Iterator[Consortium]:
    net = Consortium(
        bootstrap, tmp_path, 4, prefix=f"sim{unique}.", block_interval_ms=200, max_block_txs=200
    )
    try:
        net.start_all()
        net.wait_ready(net.institutions)
        yield net
    finally:
        net.close()


def test_simulated_workload_is_accepted_and_stale_nonces_resync(consortium: Consortium) -> None:
    insts = consortium.institutions
    service = {i: KeyPair.from_seed(hashlib.sha256(f"sim/{i}".encode()).digest()) for i in insts}
    # inst-2's backend has already sent two transactions: its projected nonce (below) lags
    stale = insts[1]
    consortium.send(
        [
            consortium.tx(
                consortium.gov_key(stale),
                "RegisterIdentity",
                register_identity_args(
                    service[stale],
                    chain_id=consortium.chain_id,
                    institution_id=stale,
                    kind="SERVICE",
                    label="pre",
                ),
            ),
            *(
                consortium.tx(
                    service[stale],
                    "AnchorData",
                    {"data_id": f"pre-{n}", "sha256": bytes(32), "metadata": ""},
                )
                for n in range(2)
            ),
        ]
    )
    consortium.wait_final(1)  # the three transactions above are in block 1
    lookups: dict[bytes, int] = {}

    def nonce_lookup(_institution: str, key_id: bytes) -> int | None:
        lookups[key_id] = lookups.get(key_id, 0) + 1
        if key_id == service[stale].key_id and lookups[key_id] == 1:
            return 0  # a projection that has not caught up yet
        record = consortium.replay().machine.state.get(key_key(key_id))
        return 0 if record is None else int(record["next_nonce"])

    config = SimConfig(
        bootstrap=consortium.bootstrap,
        prefix=consortium.prefix,
        chain_id=consortium.chain_id,
        genesis=consortium.genesis,
        governance_keys={i: consortium.gov_key(i) for i in insts},
        service_keys=service,
        members=len(insts),
        rate=40.0,
        seconds=6.0,
        drain=20.0,
        seed=5,
        weights={"anchor": 0.5, "device": 0.1, "asset": 0.15, "transfer": 0.15, "propose": 0.1},
    )
    summary = Simulator(config, nonce_lookup).run()

    assert summary["sent"] >= 150
    assert summary["no_receipt"] == 0 and summary["delivery_failures"] == 0
    assert summary["accepted"] + summary["rejected"] == summary["sent"]
    assert set(summary["rejected_by_code"]) <= {"BAD_NONCE"}
    assert summary["rejected"] >= 1 and summary["resyncs"] >= 1  # the stale sender recovered
    assert summary["accepted"] >= summary["sent"] - 10
    assert {"anchor", "device", "asset", "transfer", "propose", "vote"} <= set(summary["by_kind"])
    # the validator set never grew: every simulated proposal was voted down
    replay = consortium.replay()
    assert sorted(replay.blocks[-1].validator_set.members) == insts
    assert member_ids(replay.machine.state, replay.height + 1) == insts
