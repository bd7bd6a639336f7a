"""Offline verification of anchored-object proofs built from a pure chain: each link is named."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from ledger import proofs
from ledger.finality import QuorumCertificate
from ledger.genesis import Genesis
from ledger.hashing import canonical_bytes, sha256
from ledger.proofs import (
    ObjectProof,
    ObjectProofError,
    ProofLink,
    verify_object_proof,
)
from readers.object_verify import object_verify_main, verify_object
from tests.unit.chain_helpers import CHAIN, Driver, certified_inclusion, consortium
from tests.vectors import as_written_today

DATA = b"the quarterly report\n" * 100


def _proof() -> tuple[ObjectProof, Genesis]:
    plan = consortium(4)
    driver = Driver(plan)
    gov = driver.gov("inst-0")
    raws = [
        driver.tx(gov, "AnchorData", {"data_id": "a", "sha256": bytes(32), "metadata": ""}),
        driver.tx(gov, "AnchorData", {"data_id": "doc", "sha256": sha256(DATA), "metadata": "m"}),
        driver.tx(gov, "AnchorData", {"data_id": "b", "sha256": bytes(32), "metadata": ""}),
    ]
    executed = driver.block(raws)
    assert [r.code.name for r in executed.results] == ["OK", "OK", "OK"]
    proof = ObjectProof(
        chain_id=CHAIN,
        data_id="doc",
        sha256=sha256(DATA),
        size=len(DATA),
        content_type="text/plain",
        tx_id=executed.results[1].tx_id,
        block_hash=executed.block_hash,
        inclusion=certified_inclusion(plan, executed, raws, 1),
    )
    return proof, plan.genesis


def _flip(b: bytes, i: int = 0) -> bytes:
    return b[:i] + bytes([b[i] ^ 1]) + b[i + 1 :]


def test_valid_proof_verifies_and_roundtrips() -> None:
    proof, genesis = _proof()
    ok = verify_object_proof(proof, genesis, DATA)
    assert ok.height == 1 and ok.data_id == "doc" and ok.sha256 == sha256(DATA)
    doc = json.loads(json.dumps(proof.to_json()))
    assert ObjectProof.from_json(doc) == proof
    verify_object(DATA, doc, genesis)


@pytest.mark.parametrize(
    ("path", "value"), [(("size",), "5"), (("anchor", "height"), True), (("block", "height"), 1.0)]
)
def test_loosely_typed_numbers_are_format_errors(path: tuple[str, ...], value: object) -> None:
    proof, _genesis = _proof()
    doc = json.loads(json.dumps(proof.to_json()))
    node = doc
    for name in path[:-1]:
        node = node[name]
    node[path[-1]] = value
    with pytest.raises(ObjectProofError) as caught:
        ObjectProof.from_json(doc)
    assert caught.value.link is ProofLink.FORMAT


def _link(data: bytes, doc: dict[str, Any], genesis: Genesis) -> ProofLink:
    with pytest.raises(ObjectProofError) as err:
        verify_object(data, doc, genesis)
    assert str(err.value).startswith(err.value.link.value)
    return err.value.link


def test_every_tampered_link_is_named() -> None:
    proof, genesis = _proof()
    good = proof.to_json()

    def edited(section: str | None, key: str, value: Any) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(json.dumps(good))
        (doc if section is None else doc[section])[key] = value
        return doc

    t, b = good["transaction"], good["block"]
    assert _link(_flip(DATA, 7), good, genesis) is ProofLink.OBJECT_HASH
    assert _link(DATA + b"x", good, genesis) is ProofLink.OBJECT_HASH
    other = sha256(b"other").hex()
    assert _link(DATA, edited(None, "sha256", other), genesis) is ProofLink.OBJECT_HASH
    # the anchored hash inside the (signed) envelope: the signature no longer holds
    env = bytes.fromhex(t["envelope"])
    where = env.find(sha256(DATA))
    assert where > 0
    forged = edited("transaction", "envelope", _flip(env, where).hex())
    assert _link(DATA, forged, genesis) is ProofLink.ANCHOR_TX
    assert _link(DATA, edited("anchor", "tx_id", "00" * 32), genesis) is ProofLink.ANCHOR_TX
    assert _link(DATA, edited(None, "data_id", "a"), genesis) is ProofLink.ANCHOR_TX
    path = [_flip(bytes.fromhex(t["path"][0])).hex(), *t["path"][1:]]
    assert _link(DATA, edited("transaction", "path", path), genesis) is ProofLink.TX_INCLUSION
    assert _link(DATA, edited("transaction", "index", 0), genesis) is ProofLink.TX_INCLUSION
    assert _link(DATA, edited("transaction", "offset", 10_000), genesis) is ProofLink.TX_INCLUSION
    header_doc = edited("block", "timestamp_ms", b["timestamp_ms"] + 1)
    assert _link(DATA, header_doc, genesis) is ProofLink.HEADER_HASH
    tx_root = edited("block", "tx_root", _flip(bytes.fromhex(b["tx_root"])).hex())
    assert _link(DATA, tx_root, genesis) is ProofLink.HEADER_HASH
    # a consistent new header (hash recomputed) is not certified
    forged_header = dataclasses.replace(proof.inclusion.header, timestamp_ms=5)
    consistent = proofs.edited(proof, header=forged_header, block_hash=forged_header.hash())
    assert _link(DATA, consistent.to_json(), genesis) is ProofLink.CERTIFICATE
    cert = bytes.fromhex(b["certificate"])
    assert _link(
        DATA, edited("block", "certificate", _flip(cert, len(cert) - 3).hex()), genesis
    ) in (ProofLink.CERTIFICATE,)
    empty = QuorumCertificate(height=1, block_hash=proof.block_hash, votes=())
    few = canonical_bytes("QuorumCertificate", empty.record()).hex()
    assert _link(DATA, edited("block", "certificate", few), genesis) is ProofLink.CERTIFICATE
    assert _link(DATA, good, consortium(3).genesis) is ProofLink.CERTIFICATE
    assert _link(DATA, edited(None, "chain_id", "other"), genesis) is ProofLink.CHAIN
    assert _link(DATA, edited(None, "version", 9), genesis) is ProofLink.FORMAT
    assert _link(DATA, edited(None, "transaction", {}), genesis) is ProofLink.FORMAT


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proof, genesis = _proof()
    (tmp_path / "genesis.avro").write_bytes(genesis.encode())
    (tmp_path / "proof.json").write_text(json.dumps(proof.to_json()))
    (tmp_path / "doc").write_bytes(DATA)
    argv = ["--genesis", str(tmp_path / "genesis.avro"), "--proof", str(tmp_path / "proof.json")]
    assert object_verify_main([*argv, str(tmp_path / "doc")]) == 0
    assert json.loads(capsys.readouterr().out)["valid"] is True
    (tmp_path / "doc").write_bytes(_flip(DATA, 3))
    assert object_verify_main([*argv, str(tmp_path / "doc")]) == 1
    assert "object hash vs anchored hash" in capsys.readouterr().err
    assert object_verify_main([*argv, str(tmp_path / "missing")]) == 2  # could not run
    assert object_verify_main([]) == 2


STORED = Path(__file__).resolve().parents[1] / "vectors" / "proofs"


def test_a_stored_object_proof_of_the_flat_era_still_verifies(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``object_proof.json`` was written before the proof classes nested their inclusion part
    (D45): ``pantheon verify-object`` accepts it and today's writer gives it back unchanged."""
    text = (STORED / "object_proof.json").read_text()
    proof, _genesis = _proof()
    assert json.dumps(proof.to_json(), indent=2) + "\n" == as_written_today(text)
    (tmp_path / "doc").write_bytes(DATA)
    argv = ["--genesis", str(STORED / "genesis.avro"), "--proof", str(STORED / "object_proof.json")]
    assert object_verify_main([*argv, str(tmp_path / "doc")]) == 0
    assert json.loads(capsys.readouterr().out)["valid"] is True
