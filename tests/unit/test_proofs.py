"""Offline verification of Layer-2 proofs built from a pure chain: every link is checked."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ledger.devices import sign_device_record
from ledger.errors import ProofError
from ledger.finality import QuorumCertificate
from ledger.genesis import Genesis
from ledger.hashing import canonical_bytes
from ledger.l2 import BUNDLE_KIND, RECORD_KIND, sign_device_bundle
from ledger.merkle import inclusion_proof, root
from ledger.proofs import (
    RecordProof,
    TxInclusion,
    edited,
    genesis_validators,
    verify_record_proof,
)
from ledger.tx import parse_tx
from readers.proofs import verify_main
from tests.unit.chain_helpers import CHAIN, Driver, certified_inclusion, consortium, key
from tests.vectors import as_written_today

DEVICE = key("proof-device")


def _chain_proof(kind: str) -> tuple[RecordProof, Genesis]:
    plan = consortium(4)
    driver = Driver(plan)
    gov = driver.gov("inst-0")
    if kind == RECORD_KIND:
        leaves = [
            sign_device_record(
                DEVICE, sequence=i, measured_at_ms=i, content_type="t", payload=bytes([i])
            ).leaf()
            for i in range(7)
        ]
    else:
        leaves = [
            sign_device_bundle(
                DEVICE,
                first_sequence=10 * i,
                content_type="t",
                readings=[(j, bytes([j])) for j in range(10)],
            ).leaf()
            for i in range(5)
        ]
    args = {
        "batch_id": "b-1",
        "merkle_root": root(leaves),
        "leaf_count": len(leaves),
        "window_start_ms": 1,
        "window_end_ms": 2,
    }
    raws = [
        driver.tx(gov, "AnchorData", {"data_id": "x", "sha256": bytes(32), "metadata": ""}),
        driver.tx(gov, "CommitBatch", args),
        driver.tx(gov, "AnchorData", {"data_id": "y", "sha256": bytes(32), "metadata": ""}),
    ]
    executed = driver.block(raws)
    assert [r.code.name for r in executed.results] == ["OK", "OK", "OK"]
    index = 3
    seq = 3 if kind == RECORD_KIND else 33
    proof = RecordProof(
        chain_id=CHAIN,
        device_public_key=DEVICE.public_key,
        kind=kind,
        leaf=leaves[index],
        sequence=seq,
        batch_id="b-1",
        leaf_index=index,
        leaf_count=len(leaves),
        audit_path=tuple(inclusion_proof(leaves, index)),
        merkle_root=root(leaves),
        inclusion=certified_inclusion(plan, executed, raws, 1),
    )
    return proof, plan.genesis


@pytest.mark.parametrize("kind", [RECORD_KIND, BUNDLE_KIND])
def test_valid_proof_verifies_and_roundtrips(kind: str) -> None:
    proof, genesis = _chain_proof(kind)
    ok = verify_record_proof(proof, genesis)
    assert ok.height == 1 and ok.batch_id == "b-1"
    assert ok.payload == bytes([3]) and ok.device_key_id == DEVICE.key_id
    again = RecordProof.from_json(json.loads(json.dumps(proof.to_json())))
    assert again == proof
    assert verify_record_proof(again, genesis).sequence == proof.sequence


def test_every_tampered_link_is_refused() -> None:
    proof, genesis = _chain_proof(RECORD_KIND)

    def flip(b: bytes) -> bytes:
        return bytes([b[0] ^ 1]) + b[1:]

    other = sign_device_record(
        DEVICE, sequence=3, measured_at_ms=3, content_type="t", payload=b"forged"
    ).leaf()
    bad = [
        edited(proof, leaf=other),  # device signature fine, not in the tree
        edited(proof, leaf=proof.leaf[:-1] + bytes([proof.leaf[-1] ^ 1])),
        edited(proof, device_public_key=key("x").public_key),
        edited(proof, sequence=4),
        edited(proof, leaf_index=2),
        edited(proof, audit_path=proof.audit_path[:-1]),
        edited(proof, merkle_root=flip(proof.merkle_root)),
        edited(proof, leaf_count=8),
        edited(proof, batch_id="b-2"),
        edited(proof, envelope=proof.inclusion.envelope[:-1] + b"\x00"),
        edited(proof, tx_index=0),
        edited(proof, tx_path=(flip(proof.inclusion.tx_path[0]), *proof.inclusion.tx_path[1:])),
        edited(proof, tx_offset=10_000),
        edited(proof, header=dataclasses.replace(proof.inclusion.header, timestamp_ms=5)),
        edited(proof, certificate=proof.inclusion.certificate[:-1]),
        edited(proof, chain_id="other"),
        edited(proof, kind="nope"),
    ]
    for tampered in bad:
        with pytest.raises(ProofError):
            verify_record_proof(tampered, genesis)
    # a certificate with too few votes
    cert = QuorumCertificate(height=1, block_hash=proof.inclusion.header.hash(), votes=())
    with pytest.raises(ProofError):
        verify_record_proof(
            edited(proof, certificate=canonical_bytes("QuorumCertificate", cert.record())),
            genesis,
        )
    # another consortium's genesis (other validators) is refused
    with pytest.raises(ProofError):
        verify_record_proof(proof, consortium(3).genesis)
    with pytest.raises(ProofError):
        RecordProof.from_json({"version": 99})


def test_the_inclusion_part_stands_alone() -> None:
    """The part a record proof shares with object proofs: parsed from the proof's own sections,
    it certifies the CommitBatch's block, and refuses another tx id or a tampered path."""
    proof, genesis = _chain_proof(RECORD_KIND)
    doc = json.loads(json.dumps(proof.to_json()))
    part = TxInclusion.from_json(doc["transaction"], doc["block"])
    assert part == proof.inclusion
    assert part.transaction_json() == doc["transaction"] and part.block_json() == doc["block"]
    tx_id = parse_tx(proof.inclusion.envelope).tx_id
    assert part.verify(tx_id, genesis) == proof.inclusion.header.hash()
    with pytest.raises(ProofError):
        part.check_in_block(bytes(32))
    with pytest.raises(ProofError):
        dataclasses.replace(part, tx_path=part.tx_path[:-1]).check_in_block(tx_id)
    with pytest.raises(ProofError):
        part.check_certified(consortium(3).genesis)


def test_membership_change_is_reported_not_trusted() -> None:
    proof, genesis = _chain_proof(RECORD_KIND)
    vs = genesis_validators(genesis, 1)
    smaller = dataclasses.replace(vs, members={k: v for k, v in list(vs.members.items())[:3]})
    with pytest.raises(ProofError, match="validator set"):
        verify_record_proof(proof, genesis, smaller)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("sequence",), float("-inf")),  # JSON -Infinity: int() overflows
        (("batch", "leaf_index"), 1e400),  # read as inf
        (("block", "last_offset"), 4 * 10**36),  # past 64 bits: the header cannot be hashed
        (("block", "height"), 2**63),
        # loose types the parser used to coerce: only JSON integers and strings are read
        (("sequence",), "3"),
        (("batch", "leaf_index"), 0.0),
        (("transaction", "offset"), True),
        (("block", "timestamp_ms"), 1.5),
        (("chain_id",), 7),
    ],
)
def test_out_of_range_numbers_are_proof_errors(path: tuple[str, ...], value: object) -> None:
    """Found by the atheris driver: these raised OverflowError or DecodeError."""
    proof, genesis = _chain_proof(RECORD_KIND)
    doc = json.loads(json.dumps(proof.to_json()))
    node = doc
    for name in path[:-1]:
        node = node[name]
    node[path[-1]] = value
    with pytest.raises(ProofError):
        verify_record_proof(RecordProof.from_json(json.loads(json.dumps(doc))), genesis)


def test_verify_command_refuses_deeply_nested_json(tmp_path: Path) -> None:
    _, genesis = _chain_proof(RECORD_KIND)
    (tmp_path / "genesis.avro").write_bytes(genesis.encode())
    (tmp_path / "proof.json").write_text("[" * 100_000)
    assert (
        verify_main(["--genesis", str(tmp_path / "genesis.avro"), str(tmp_path / "proof.json")])
        == 1
    )


STORED = Path(__file__).resolve().parents[1] / "vectors" / "proofs"


@pytest.mark.parametrize("kind", [RECORD_KIND, BUNDLE_KIND])
def test_a_stored_proof_file_of_the_flat_era_still_verifies(kind: str) -> None:
    """``record_proof_<kind>.json`` was written by ``pantheon proof``'s code before the proof
    classes nested their inclusion part (D45): the wire format did not change, so
    ``pantheon verify`` accepts the file, and today's writer gives it back byte for byte."""
    text = (STORED / f"record_proof_{kind}.json").read_text()
    proof, genesis = _chain_proof(kind)
    assert json.dumps(proof.to_json(), indent=2) + "\n" == as_written_today(text)
    assert RecordProof.from_json(json.loads(as_written_today(text))) == proof
    argv = ["--genesis", str(STORED / "genesis.avro"), str(STORED / f"record_proof_{kind}.json")]
    assert verify_main(argv) == 0
    assert (STORED / "genesis.avro").read_bytes() == genesis.encode()
