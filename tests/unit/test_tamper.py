"""A tampered byte anywhere in a tx, header (finalized block), vote or proof is rejected."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.blocks import EntryResult, encode_finalized, tx_proof, verify_tx_proof
from ledger.errors import DecodeError, ProofError
from ledger.finality import FinalityTracker, Finalized, verify_finalized
from ledger.tx import TxRejected, parse_tx, sign_tx
from ledger.votes import decode_vote, sign_vote
from tests.unit.chain_helpers import Driver, consortium, key

SIGNER = key("tamper")
TX = sign_tx(
    SIGNER,
    chain_id="c",
    nonce=1,
    operation="TransferAsset",
    args={"asset_id": "a", "new_owner_key_id": bytes(32)},
)
VOTE = sign_vote(SIGNER, height=3, block_hash=b"\x07" * 32).encode()


def _finalized() -> tuple[bytes, object, list[bytes]]:
    d = Driver(consortium(4))
    executed = d.block(
        [
            d.tx(
                d.gov("inst-0"),
                "AnchorData",
                {"data_id": f"d{i}", "sha256": bytes(32), "metadata": ""},
            )
            for i in range(5)
        ]
    )
    tracker = FinalityTracker()
    tracker.set_validators(executed.validator_set)
    final = None
    for inst in sorted(d.plan.keys):
        for event in tracker.add_vote(
            sign_vote(d.plan.keys[inst][1][0], height=1, block_hash=executed.block_hash)
        ):
            if isinstance(event, Finalized):
                final = event
    assert final is not None
    raw = encode_finalized(executed.header, final.certificate.record(), executed.results)
    return raw, executed, [r.leaf() for r in executed.results]


FINALIZED, EXECUTED, LEAVES = _finalized()


def flip(data: bytes, position: int, mask: int) -> bytes:
    out = bytearray(data)
    out[position % len(out)] ^= mask
    return bytes(out)


def test_every_single_bit_flip_of_a_tx_is_rejected() -> None:
    parse_tx(TX)
    for position in range(len(TX)):
        for mask in (0x01, 0x80):
            with pytest.raises(TxRejected):
                parse_tx(flip(TX, position, mask))


def test_every_single_bit_flip_of_a_vote_is_rejected() -> None:
    assert decode_vote(VOTE).is_valid()
    for position in range(len(VOTE)):
        for mask in (0x01, 0x40):
            try:
                vote = decode_vote(flip(VOTE, position, mask))
            except DecodeError:
                continue
            assert not vote.is_valid()


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=1, max_value=255))
def test_any_tampered_byte_of_a_finalized_block_is_rejected(position: int, mask: int) -> None:
    validators = EXECUTED.validator_set  # type: ignore[attr-defined]
    verify_finalized(FINALIZED, validators)
    tampered = flip(FINALIZED, position, mask)
    try:
        header, _, results = verify_finalized(tampered, validators)
    except (DecodeError, ProofError):
        return
    # Only an entry's offset can move (it is not a tx_root leaf field, see ledger.blocks),
    # and then only to another increasing offset inside the block's range.
    assert header == EXECUTED.header  # type: ignore[attr-defined]
    original = EXECUTED.results  # type: ignore[attr-defined]
    assert [(r.tx_id, r.code) for r in results] == [(r.tx_id, r.code) for r in original]
    assert [r.offset for r in results] != [r.offset for r in original]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=0, max_value=4),
    st.integers(min_value=0),
    st.integers(min_value=1, max_value=255),
    st.sampled_from(["proof", "leaf", "root"]),
)
def test_any_tampered_byte_of_an_inclusion_proof_is_rejected(
    index: int, position: int, mask: int, where: str
) -> None:
    results = EXECUTED.results  # type: ignore[attr-defined]
    header = EXECUTED.header  # type: ignore[attr-defined]
    proof = tx_proof(results, index)
    verify_tx_proof(results[index], index, len(results), proof, header)
    if where == "proof":
        node = position % len(proof)
        proof = [
            flip(p, position // len(proof), mask) if i == node else p for i, p in enumerate(proof)
        ]
        with pytest.raises(ProofError):
            verify_tx_proof(results[index], index, len(results), proof, header)
    elif where == "leaf":
        result = results[index]
        tampered = EntryResult(
            tx_id=flip(result.tx_id, position, mask), offset=result.offset, code=result.code
        )
        with pytest.raises(ProofError):
            verify_tx_proof(tampered, index, len(results), proof, header)
    else:
        with pytest.raises(ProofError):
            verify_tx_proof(
                results[index],
                index,
                len(results),
                proof,
                replace(header, tx_root=flip(header.tx_root, position, mask)),
            )
