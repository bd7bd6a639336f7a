"""System contracts: permissions, result codes, and rejected operations changing nothing."""

from __future__ import annotations

from typing import Any

from ledger.key_proofs import (
    add_operator_args,
    propose_member_args,
    register_identity_args,
    rotate_key_args,
)
from ledger.keys import KeyPair
from ledger.members import inst_key, key_key, member_ids
from tests.unit.chain_helpers import CHAIN, Driver, consortium, key


def identity(new: KeyPair, inst: str, kind: str, label: str) -> dict[str, Any]:
    return register_identity_args(new, chain_id=CHAIN, institution_id=inst, kind=kind, label=label)


def operator(new: KeyPair, inst: str) -> dict[str, Any]:
    return add_operator_args(new, chain_id=CHAIN, institution_id=inst)


def driver(n: int = 4, **params: int) -> Driver:
    return Driver(consortium(n, **params))


def rotation(new: KeyPair, old: KeyPair) -> dict[str, Any]:
    """``RotateKey`` arguments replacing ``old`` by ``new``, with the new key's proof."""
    return rotate_key_args(new, chain_id=CHAIN, key_id=old.key_id, old_public_key=old.public_key)


def test_identity_lifecycle_and_permissions() -> None:
    d = driver()
    gov0, gov1 = d.gov("inst-0"), d.gov("inst-1")
    svc, dev, new_dev = key("svc"), key("dev"), key("dev2")
    assert d.codes(
        [
            d.tx(
                gov0,
                "RegisterIdentity",
                identity(svc, "inst-0", "SERVICE", "svc"),
            ),
        ]
    ) == ["OK"]
    assert d.codes(
        [
            d.tx(
                svc,
                "RegisterIdentity",
                identity(dev, "inst-0", "DEVICE", "d"),
            ),
            d.tx(
                svc,
                "RegisterIdentity",
                identity(key("s2"), "inst-0", "SERVICE", "no"),
            ),
            d.tx(gov1, "RevokeIdentity", {"key_id": dev.key_id}),
            d.tx(dev, "RotateKey", rotation(new_dev, dev)),
            d.tx(dev, "AnchorData", {"data_id": "x", "sha256": bytes(32), "metadata": ""}),
            d.tx(new_dev, "AnchorData", {"data_id": "x", "sha256": bytes(32), "metadata": ""}),
        ]
    ) == ["OK", "FORBIDDEN", "FORBIDDEN", "OK", "INACTIVE_SENDER", "OK"]
    state = d.machine.state
    assert state.get(key_key(dev.key_id))["active"] is False  # type: ignore[index]
    assert state.get("anchor/x")["anchored_by"] == new_dev.key_id  # type: ignore[index]
    assert d.codes(
        [
            d.tx(gov0, "RevokeIdentity", {"key_id": new_dev.key_id}),
            d.tx(
                new_dev,
                "AnchorData",
                {"data_id": "y", "sha256": bytes(32), "metadata": ""},
                nonce=1,
            ),
        ]
    ) == ["OK", "INACTIVE_SENDER"]


def test_nonce_rules_and_rejected_changes_nothing() -> None:
    d = driver()
    gov = d.gov("inst-0")
    root_before = d.machine.state.root
    codes = d.codes(
        [
            d.tx(gov, "AnchorData", {"data_id": "a", "sha256": bytes(31), "metadata": ""}, nonce=0),
            d.tx(gov, "AnchorData", {"data_id": "a", "sha256": bytes(32), "metadata": ""}, nonce=1),
            d.tx(gov, "AnchorData", {"data_id": "a", "sha256": bytes(32), "metadata": ""}, nonce=0),
            d.tx(gov, "AnchorData", {"data_id": "a", "sha256": bytes(32), "metadata": ""}, nonce=1),
            d.tx(gov, "AnchorData", {"data_id": "b", "sha256": bytes(32), "metadata": ""}, nonce=0),
        ]
    )
    assert codes == ["INVALID_ARGUMENT", "BAD_NONCE", "OK", "ALREADY_EXISTS", "BAD_NONCE"]
    assert d.machine.state.get(key_key(gov.key_id))["next_nonce"] == 1  # type: ignore[index]
    assert d.machine.state.root != root_before
    # A block of only rejected entries writes nothing, but the root still advances.
    empty = d.block(
        [d.tx(key("nobody"), "AnchorData", {"data_id": "z", "sha256": bytes(32), "metadata": ""})]
    )
    assert [r.code.name for r in empty.results] == ["UNKNOWN_SENDER"]
    assert empty.writes.entries == ()


def test_operators() -> None:
    d = driver()
    gov0, gov1 = d.gov("inst-0"), d.gov("inst-1")
    extra = key("extra-op")
    op1 = d.plan.keys["inst-1"][1][0]
    assert d.codes(
        [
            d.tx(gov0, "AddOperator", operator(extra, "inst-0")),
            d.tx(gov1, "RemoveOperator", {"operator_key_id": extra.key_id}),
            d.tx(gov0, "AddOperator", operator(extra, "inst-0")),
            d.tx(op1, "AnchorData", {"data_id": "op", "sha256": bytes(32), "metadata": ""}),
        ]
    ) == ["OK", "FORBIDDEN", "ALREADY_EXISTS", "FORBIDDEN"]
    assert extra.key_id in d.machine.validator_set().members["inst-0"]
    assert d.codes([d.tx(gov0, "RemoveOperator", {"operator_key_id": extra.key_id})]) == ["OK"]
    assert extra.key_id not in d.machine.validator_set().members["inst-0"]


def test_assets_transfer_only_by_owner() -> None:
    d = driver()
    gov0, gov1 = d.gov("inst-0"), d.gov("inst-1")
    assert d.codes(
        [
            d.tx(gov0, "RegisterAsset", {"asset_id": "car", "metadata": "{}"}, nonce=0),
            d.tx(
                gov1, "TransferAsset", {"asset_id": "car", "new_owner_key_id": gov1.key_id}, nonce=0
            ),
            d.tx(
                gov0,
                "TransferAsset",
                {"asset_id": "car", "new_owner_key_id": key("x").key_id},
                nonce=1,
            ),
            d.tx(
                gov0, "TransferAsset", {"asset_id": "car", "new_owner_key_id": gov1.key_id}, nonce=1
            ),
            d.tx(
                gov0, "TransferAsset", {"asset_id": "car", "new_owner_key_id": gov0.key_id}, nonce=2
            ),
            d.tx(
                gov1,
                "TransferAsset",
                {"asset_id": "boat", "new_owner_key_id": gov0.key_id},
                nonce=0,
            ),
        ]
    ) == ["OK", "FORBIDDEN", "NOT_FOUND", "OK", "FORBIDDEN", "NOT_FOUND"]
    assert d.machine.state.get("asset/car")["owner_key_id"] == gov1.key_id  # type: ignore[index]


def test_commit_batch_and_anchor_arguments() -> None:
    d = driver()
    gov = d.gov("inst-2")
    batch = {
        "batch_id": "b1",
        "merkle_root": bytes(32),
        "leaf_count": 4,
        "window_start_ms": 1,
        "window_end_ms": 2,
    }
    assert d.codes(
        [
            d.tx(gov, "CommitBatch", batch, nonce=0),
            d.tx(gov, "CommitBatch", batch, nonce=1),
            d.tx(gov, "CommitBatch", {**batch, "batch_id": "b2", "leaf_count": 0}, nonce=1),
            d.tx(gov, "CommitBatch", {**batch, "batch_id": "b3", "window_start_ms": 5}, nonce=1),
            d.tx(gov, "AnchorData", {"data_id": "", "sha256": bytes(32), "metadata": ""}, nonce=1),
        ]
    ) == ["OK", "ALREADY_EXISTS", "INVALID_ARGUMENT", "INVALID_ARGUMENT", "INVALID_ARGUMENT"]


def test_governance_threshold_expiry_and_single_vote() -> None:
    d = driver(proposal_ttl_blocks=2)
    g = [d.gov(f"inst-{i}") for i in range(4)]
    newcomer = key("newcomer-gov")
    executed = d.block(
        [
            d.tx(
                g[0],
                "ProposeMember",
                propose_member_args(newcomer, [], chain_id=CHAIN, institution_id="inst-new"),
            )
        ]
    )
    proposal_id = executed.results[0].tx_id
    vote = {"proposal_id": proposal_id, "approve": True}
    assert d.codes(
        [
            d.tx(g[0], "CastVote", vote),
            d.tx(g[1], "CastVote", vote),
            d.tx(g[1], "CastVote", vote, nonce=1),
            d.tx(g[1], "CastVote", vote, nonce=3),
            d.tx(g[2], "CastVote", {"proposal_id": b"nope", "approve": True}),
        ]
    ) == ["ALREADY_VOTED", "OK", "ALREADY_VOTED", "BAD_NONCE", "NOT_FOUND"]
    # 2 of 4 yes: not passed (needs more than 2/3). Let the proposal expire.
    d.block([d.tx(g[3], "AnchorData", {"data_id": "t", "sha256": bytes(32), "metadata": ""})])
    assert d.codes(
        [d.tx(g[2], "CastVote", {"proposal_id": proposal_id, "approve": True}, nonce=0)]
    ) == ["EXPIRED"]
    assert "inst-new" not in member_ids(d.machine.state, d.machine.height + 1)


def test_governance_rejection_and_removal_rules() -> None:
    d = driver()
    g = [d.gov(f"inst-{i}") for i in range(4)]
    executed = d.block(
        [d.tx(g[0], "ProposeRemoval", {"institution_id": "inst-3", "reason": "gone"})]
    )
    pid = executed.results[0].tx_id
    assert d.codes(
        [
            d.tx(g[1], "CastVote", {"proposal_id": pid, "approve": False}),
            d.tx(g[2], "CastVote", {"proposal_id": pid, "approve": False}),
            d.tx(g[3], "CastVote", {"proposal_id": pid, "approve": True}),
        ]
    ) == ["OK", "OK", "CLOSED"]
    assert d.machine.state.get(f"prop/{pid.hex()}")["status"] == "REJECTED"  # type: ignore[index]
    assert d.codes([d.tx(g[0], "ProposeRemoval", {"institution_id": "nope", "reason": ""})]) == [
        "NOT_FOUND"
    ]


def test_single_member_cannot_remove_itself_but_admits_alone() -> None:
    d = driver(1)
    g = d.gov("inst-0")
    other = key("other")
    assert d.codes(
        [
            d.tx(g, "ProposeRemoval", {"institution_id": "inst-0", "reason": ""}),
            d.tx(
                g,
                "ProposeMember",
                propose_member_args(other, [], chain_id=CHAIN, institution_id="inst-1"),
                nonce=0,
            ),
        ]
    ) == ["FORBIDDEN", "OK"]
    inst = d.machine.state.get(inst_key("inst-1"))
    assert inst is not None and inst["effective_height"] == d.machine.height + 1
