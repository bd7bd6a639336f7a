"""Execution: headers, roots, determinism, genesis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.blocks import BlockHeader, decode_finalized, encode_finalized, tx_root
from ledger.errors import InvalidEvent, StateError
from ledger.execution import LedgerMachine
from ledger.genesis import ChainParams, Founder, Genesis, genesis_writes
from ledger.hashing import ZERO_HASH, sha256
from ledger.key_proofs import propose_member_args, register_identity_args
from ledger.merkle import root
from ledger.results import ResultCode
from ledger.state import WriteSet, next_state_root
from ledger.tx import sign_tx
from tests.unit.chain_helpers import CHAIN, Driver, consortium, key


def test_genesis_hash_state_and_validator_set() -> None:
    plan = consortium(4)
    machine = LedgerMachine(plan.genesis)
    assert machine.height == 0
    assert machine.state.root == sha256(ZERO_HASH + genesis_writes(plan.genesis).digest())
    assert machine.last_hash == plan.genesis.hash() == sha256(plan.genesis.encode()[10:])
    vset = machine.validator_set()
    assert vset.height == 1 and vset.size == 4 and vset.quorum == 3
    assert Genesis.from_record(plan.genesis.record()) == plan.genesis


def test_genesis_validation() -> None:
    gov = key("g").public_key
    with pytest.raises(InvalidEvent):
        Genesis(params=ChainParams(chain_id="c"), founders=())
    with pytest.raises(InvalidEvent):
        Founder(institution_id="Bad Id", governance_public_key=gov)
    with pytest.raises(InvalidEvent):
        ChainParams(chain_id="c", threshold_num=3, threshold_den=3)
    twice = Founder(institution_id="b", governance_public_key=gov)
    with pytest.raises(InvalidEvent):
        Genesis(
            params=ChainParams(chain_id="c"),
            founders=(Founder(institution_id="a", governance_public_key=gov), twice),
        )


def test_header_fields_and_chain_links() -> None:
    d = Driver(consortium(4))
    gov = d.gov("inst-0")
    prev_root = d.machine.state.root
    first = d.block(
        [d.tx(gov, "AnchorData", {"data_id": "a", "sha256": bytes(32), "metadata": ""}), b"garbage"]
    )
    header = first.header
    assert header.height == 1 and header.prev_hash == d.plan.genesis.hash()
    assert (header.first_offset, header.last_offset) == (0, 2)
    assert header.timestamp_ms == 1002
    assert header.state_root == next_state_root(prev_root, first.writes)
    leaves = [r.tx_id + bytes([r.code]) for r in first.results]
    assert header.tx_root == root(leaves) == tx_root(first.results)
    assert [r.code for r in first.results] == [ResultCode.OK, ResultCode.MALFORMED]
    assert first.results[1].tx_id == sha256(b"garbage")
    assert header.validator_set_hash == first.validator_set.hash()
    second = d.block(
        [d.tx(gov, "AnchorData", {"data_id": "b", "sha256": bytes(32), "metadata": ""})]
    )
    assert second.header.prev_hash == first.block_hash
    assert BlockHeader.from_record(header.record()) == header


def test_wrong_chain_and_commit_rules() -> None:
    d = Driver(consortium(2))
    raw = sign_tx(
        d.gov("inst-0"),
        chain_id="other",
        nonce=0,
        operation="AnchorData",
        args={"data_id": "a", "sha256": bytes(32), "metadata": ""},
    )
    executed = d.machine.execute(d.cut([raw]))
    assert executed.results[0].code is ResultCode.WRONG_CHAIN
    d.machine.commit(executed)
    with pytest.raises(StateError):
        d.machine.commit(executed)
    with pytest.raises(StateError):
        WriteSet(entries=(("b", None), ("a", None)))


def test_finalized_block_roundtrip_checks_tx_root() -> None:
    d = Driver(consortium(2))
    executed = d.block([b"x", b"y"])
    cert = {"height": 1, "block_hash": executed.block_hash, "votes": []}
    raw = encode_finalized(executed.header, cert, executed.results)
    header, certificate, results = decode_finalized(raw)
    assert header == executed.header and results == executed.results
    assert certificate == cert


OPS = st.sampled_from(["anchor", "asset", "transfer", "identity", "garbage", "vote"])


def build_blocks(plan_ops: list[list[tuple[str, int]]]) -> list[list[bytes]]:
    """Deterministic transactions from a Hypothesis plan (signing is deterministic)."""
    d = Driver(consortium(3))
    blocks: list[list[bytes]] = []
    for b, ops in enumerate(plan_ops):
        raws = []
        for i, (op, who) in enumerate(ops):
            signer = d.gov(f"inst-{who % 3}")
            nonce = (b * 7 + i) % 3
            if op == "anchor":
                raws.append(
                    d.tx(
                        signer,
                        "AnchorData",
                        {"data_id": f"d{i % 4}", "sha256": bytes(32), "metadata": ""},
                        nonce,
                    )
                )
            elif op == "asset":
                raws.append(
                    d.tx(signer, "RegisterAsset", {"asset_id": f"a{i % 3}", "metadata": ""}, nonce)
                )
            elif op == "transfer":
                raws.append(
                    d.tx(
                        signer,
                        "TransferAsset",
                        {"asset_id": f"a{i % 3}", "new_owner_key_id": d.gov("inst-1").key_id},
                        nonce,
                    )
                )
            elif op == "identity":
                raws.append(
                    d.tx(
                        signer,
                        "RegisterIdentity",
                        register_identity_args(
                            key(f"id{i % 5}"),
                            chain_id=CHAIN,
                            institution_id=f"inst-{who % 3}",
                            kind="USER",
                            label="",
                        ),
                        nonce,
                    )
                )
            elif op == "vote":
                raws.append(
                    d.tx(
                        signer,
                        "ProposeMember",
                        propose_member_args(
                            key(f"g{i}"), [], chain_id=CHAIN, institution_id=f"x{i}"
                        ),
                        nonce,
                    )
                )
            else:
                raws.append(bytes([who]) * (i + 1))
        blocks.append(raws)
    return blocks


def replay(blocks: list[list[bytes]]) -> list[bytes]:
    d = Driver(consortium(3))
    return [d.block(raws).header.state_root for raws in blocks if raws]


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(OPS, st.integers(0, 2)), min_size=1, max_size=6), min_size=1, max_size=4
    )
)
def test_replaying_the_same_blocks_gives_identical_state_roots(
    plan_ops: list[list[tuple[str, int]]],
) -> None:
    blocks = build_blocks(plan_ops)
    assert replay(blocks) == replay(blocks)


def test_chain_params_roundtrip() -> None:
    params = ChainParams(chain_id=CHAIN)
    assert ChainParams.from_record(params.record()) == params
