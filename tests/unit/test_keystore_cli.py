"""`pantheon keys` and `pantheon genesis`: secrets stay private, nothing is overwritten."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from infra.cli import main
from infra.keystore import KeystoreError, load_genesis, load_key
from ledger.key_proofs import proposal_proofs_valid


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_generate_writes_a_private_file_and_show_prints_no_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sub" / "op.json"
    assert main(["keys", "generate", str(path)]) == 0
    created = json.loads(capsys.readouterr().out)
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert main(["keys", "show", str(path)]) == 0
    shown = capsys.readouterr().out
    assert json.loads(shown)["key_id"] == created["key_id"]
    seed = json.loads(path.read_text())["seed"]
    assert seed not in shown
    assert load_key(path).key_id.hex() == created["key_id"]


def test_keys_generate_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "k.json"
    assert main(["keys", "generate", str(path)]) == 0
    before = path.read_text()
    assert main(["keys", "generate", str(path)]) == 2  # could not run
    assert "refusing to overwrite" in capsys.readouterr().err
    assert path.read_text() == before


def test_load_key_refuses_world_readable_and_mismatched_files(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    main(["keys", "generate", str(path)])
    path.chmod(0o644)
    with pytest.raises(KeystoreError, match="readable by others"):
        load_key(path)
    path.chmod(0o600)
    record = json.loads(path.read_text())
    record["key_id"] = "00" * 32
    path.write_text(json.dumps(record))
    with pytest.raises(KeystoreError, match="does not match"):
        load_key(path)
    path.write_text("not json")
    with pytest.raises(KeystoreError, match="not a Pantheon key file"):
        load_key(path)


def test_genesis_create_writes_document_summary_and_private_keystores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "net"
    assert (
        main(
            [
                "genesis",
                "create",
                "--out",
                str(out),
                "--institutions",
                "acme,globex,initech,umbrella",
            ]
        )
        == 0
    )
    genesis = load_genesis(out / "genesis.avro")
    summary = json.loads((out / "genesis.json").read_text())
    assert summary["genesis_hash"] == genesis.hash().hex()
    assert sorted(summary["institutions"]) == ["acme", "globex", "initech", "umbrella"]
    for inst in summary["institutions"]:
        keyfile = out / "keys" / f"{inst}.json"
        assert _mode(keyfile) == 0o600
        store = json.loads(keyfile.read_text())
        assert store["genesis_hash"] == genesis.hash().hex()
        assert store["governance"]["key_id"] == summary["institutions"][inst]["governance_key_id"]
    capsys.readouterr()
    assert main(["genesis", "create", "--out", str(out), "--count", "4"]) == 2  # could not run
    assert "refusing to replace" in capsys.readouterr().err
    assert load_genesis(out / "genesis.avro").hash() == genesis.hash()


def test_genesis_create_needs_institutions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["genesis", "create", "--out", str(tmp_path)]) == 2  # could not run
    assert "--institutions" in capsys.readouterr().err


def test_keys_prove_member_gives_proofs_the_contract_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The candidate's CLI output is what proposeMember needs (D63): each key's proof
    verifies for this chain and institution, and for no other."""
    gov, op = tmp_path / "gov.json", tmp_path / "op.json"
    for path in (gov, op):
        assert main(["keys", "generate", str(path)]) == 0
    capsys.readouterr()
    argv = ["keys", "prove-member", "--chain-id", "c-1", "--institution", "newco"]
    assert main([*argv, "--governance", str(gov), "--operator", str(op)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["governancePublicKey"] == load_key(gov).public_key.hex()
    args = {
        "institution_id": out["institutionId"],
        "governance_public_key": bytes.fromhex(out["governancePublicKey"]),
        "operator_public_keys": [bytes.fromhex(k) for k in out["operatorPublicKeys"]],
        "governance_key_proof": bytes.fromhex(out["governanceKeyProof"]),
        "operator_key_proofs": [bytes.fromhex(p) for p in out["operatorKeyProofs"]],
    }
    assert proposal_proofs_valid(args, chain_id="c-1")
    assert not proposal_proofs_valid(args, chain_id="c-2")
    assert not proposal_proofs_valid({**args, "institution_id": "other"}, chain_id="c-1")
    assert main([*argv[:-1], "Not A Slug", "--governance", str(gov)]) == 2
    assert "not a lowercase slug" in capsys.readouterr().err
