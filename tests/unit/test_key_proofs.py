"""``RotateKey`` proves possession of the new key (D61): refusals are ``BAD_KEY_PROOF`` and
change nothing; envelopes of the retired schema still decode, and are refused the same way."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ledger.errors import InvalidEvent
from ledger.execution import ExecutedBlock
from ledger.key_proofs import (
    ROTATE_KEY_POP_DOMAIN,
    register_identity_args,
    rotate_key_args,
    rotate_key_message,
    rotate_key_proof,
    rotate_key_proof_valid,
)
from ledger.keys import TX_DOMAIN, KeyPair
from ledger.members import inst_key, key_key
from ledger.tx import body_record, parse_tx
from schemas.codec import MAGIC, canonical
from schemas.registry import SCHEMA_DIR, Registry
from tests.unit.chain_helpers import CHAIN, Driver, consortium, key


def _driver_with_device() -> tuple[Driver, KeyPair]:
    d = Driver(consortium(4))
    dev = key("pop-dev")
    register = register_identity_args(
        dev, chain_id=CHAIN, institution_id="inst-0", kind="DEVICE", label="d"
    )
    assert d.codes([d.tx(d.gov("inst-0"), "RegisterIdentity", register)]) == ["OK"]
    return d, dev


def _args(new: KeyPair, old: KeyPair, **changes: Any) -> dict[str, Any]:
    args = rotate_key_args(new, chain_id=CHAIN, key_id=old.key_id, old_public_key=old.public_key)
    return {**args, **changes}


def _refused(d: Driver, signer: KeyPair, args: dict[str, Any]) -> ExecutedBlock:
    """One block with the rotation: refused with BAD_KEY_PROOF, and nothing written."""
    nonce_before = d.machine.state.get(key_key(signer.key_id))["next_nonce"]  # type: ignore[index]
    executed = d.block([d.tx(signer, "RotateKey", args)])
    assert [r.code.name for r in executed.results] == ["BAD_KEY_PROOF"]
    assert executed.writes.entries == ()
    state = d.machine.state
    assert state.get(key_key(signer.key_id))["next_nonce"] == nonce_before  # type: ignore[index]
    assert state.get(key_key(bytes(args["key_id"])))["active"] is True  # type: ignore[index]
    return executed


def test_a_rotation_with_the_new_keys_proof_is_accepted() -> None:
    d, dev = _driver_with_device()
    new = key("pop-dev-2")
    assert d.codes([d.tx(dev, "RotateKey", _args(new, dev))]) == ["OK"]
    state = d.machine.state
    assert state.get(key_key(dev.key_id))["active"] is False  # type: ignore[index]
    assert state.get(key_key(new.key_id))["public_key"] == new.public_key  # type: ignore[index]


def test_operator_and_governance_rotations_need_the_new_keys_proof() -> None:
    d = Driver(consortium(4))
    gov, op = d.gov("inst-0"), d.plan.keys["inst-0"][1][0]
    new_op, new_gov = key("pop-op"), key("pop-gov")
    _refused(d, gov, _args(new_op, op, new_key_proof=bytes(64)))
    assert d.codes([d.tx(gov, "RotateKey", _args(new_op, op))]) == ["OK"]
    inst = d.machine.state.get(inst_key("inst-0"))
    assert inst is not None and inst["operator_key_ids"] == [new_op.key_id]
    _refused(d, gov, _args(new_gov, gov, new_key_proof=b""))
    assert d.codes([d.tx(gov, "RotateKey", _args(new_gov, gov))]) == ["OK"]
    inst = d.machine.state.get(inst_key("inst-0"))
    assert inst is not None and inst["governance_key_id"] == new_gov.key_id


@pytest.mark.parametrize(
    "forge",
    [
        "missing",
        "short",
        "by_old_key",
        "other_key_id",
        "other_chain",
        "other_old_key",
        "other_new_key",
    ],
)
def test_a_proof_not_of_this_rotation_is_refused(forge: str) -> None:
    d, dev = _driver_with_device()
    new, other = key("pop-new"), key("pop-other")
    good = _args(new, dev)
    msg = rotate_key_message(CHAIN, dev.key_id, new.public_key, dev.public_key)
    proofs = {
        "missing": b"",
        "short": good["new_key_proof"][:63],
        "by_old_key": dev.sign(ROTATE_KEY_POP_DOMAIN, msg),
        "other_key_id": rotate_key_proof(
            new, chain_id=CHAIN, key_id=other.key_id, old_public_key=dev.public_key
        ),
        "other_chain": rotate_key_proof(
            new, chain_id=CHAIN + "-2", key_id=dev.key_id, old_public_key=dev.public_key
        ),
        "other_old_key": rotate_key_proof(
            new, chain_id=CHAIN, key_id=dev.key_id, old_public_key=other.public_key
        ),
        # the other key's own proof of this very rotation, attached to a rotation to `new`
        "other_new_key": rotate_key_proof(
            other, chain_id=CHAIN, key_id=dev.key_id, old_public_key=dev.public_key
        ),
    }
    _refused(d, dev, {**good, "new_key_proof": proofs[forge]})
    assert d.machine.state.get(key_key(new.key_id)) is None
    # the same rotation with its own proof still goes through afterwards
    assert d.codes([d.tx(dev, "RotateKey", good)]) == ["OK"]


def test_a_proof_of_an_earlier_rotation_does_not_serve_a_later_one() -> None:
    """The device rotates to n1, then n1 to n2: n2's proof of the first rotation (another key
    id and old key) and the first rotation's proof itself are both refused."""
    d, dev = _driver_with_device()
    n1, n2 = key("pop-n1"), key("pop-n2")
    first = _args(n1, dev)
    assert d.codes([d.tx(dev, "RotateKey", first)]) == ["OK"]
    earlier = rotate_key_proof(n2, chain_id=CHAIN, key_id=dev.key_id, old_public_key=dev.public_key)
    _refused(d, n1, _args(n2, n1, new_key_proof=earlier))
    _refused(d, n1, _args(n2, n1, new_key_proof=first["new_key_proof"]))
    assert d.codes([d.tx(n1, "RotateKey", _args(n2, n1))]) == ["OK"]


#: the definitions retired by D61 and D63, current together before D61
PRE_D61 = ("AddOperator", "ProposeMember", "RegisterIdentity", "RotateKey")


def _retired_registry(*retired: str) -> Registry:
    """A registry whose current schemas are the writers of before D61 (default), or of the
    ``retired`` definitions with every other type as today."""
    defs = {}
    names = retired or PRE_D61
    for path in [
        *SCHEMA_DIR.glob("*.avsc"),
        *(SCHEMA_DIR / "retired" / f"{name}.v1.avsc" for name in names),
    ]:
        schema = json.loads(path.read_text())
        defs[f"pantheon.{schema['name']}"] = schema
    return Registry(defs)


def test_an_envelope_of_the_retired_schema_decodes_and_is_refused() -> None:
    """An envelope written before ``new_key_proof`` existed decodes to a rotation without a
    proof, which is refused (no validator crashes on it, none accepts it)."""
    d, dev = _driver_with_device()
    old = _retired_registry()
    body = body_record(
        CHAIN,
        dev.key_id,
        0,
        "RotateKey",
        {"key_id": dev.key_id, "new_public_key": key("pop-v1").public_key},
    )
    body_bytes = canonical("TxBody", body, reg=old)
    envelope = {
        "body": body,
        "public_key": dev.public_key,
        "signature": dev.sign(TX_DOMAIN, body_bytes),
    }
    head = MAGIC + old.by_name("TxEnvelope").fingerprint_bytes
    raw = head + canonical("TxEnvelope", envelope, reg=old)
    assert "new_key_proof" not in parse_tx(raw).args
    executed = d.block([raw])
    assert [r.code.name for r in executed.results] == ["BAD_KEY_PROOF"]
    assert executed.writes.entries == ()


def test_the_proof_helpers_refuse_bad_input_with_typed_errors() -> None:
    dev, new = key("pop-a"), key("pop-b")
    with pytest.raises(InvalidEvent):
        rotate_key_message(CHAIN, dev.key_id[:31], new.public_key, dev.public_key)
    with pytest.raises(InvalidEvent):
        rotate_key_message(CHAIN, dev.key_id, new.public_key[:31], dev.public_key)
    with pytest.raises(InvalidEvent):
        rotate_key_proof(
            new, chain_id="x" * 65536, key_id=dev.key_id, old_public_key=dev.public_key
        )
    proof = rotate_key_proof(new, chain_id=CHAIN, key_id=dev.key_id, old_public_key=dev.public_key)
    fields: dict[str, Any] = {
        "chain_id": CHAIN,
        "key_id": dev.key_id,
        "old_public_key": dev.public_key,
    }
    assert rotate_key_proof_valid(proof, new_public_key=new.public_key, **fields)
    # never raises: malformed input is simply not a proof
    assert not rotate_key_proof_valid(proof, new_public_key=new.public_key[:5], **fields)
    assert not rotate_key_proof_valid(proof[:10], new_public_key=new.public_key, **fields)
    bad_chain = {**fields, "chain_id": "x" * 65536}
    assert not rotate_key_proof_valid(proof, new_public_key=new.public_key, **bad_chain)
    # the signed bytes are exactly those D61 names
    assert rotate_key_message("ab", b"\x01" * 32, b"\x02" * 32, b"\x03" * 32) == (
        b"\x00\x02ab\x00\x20" + b"\x01" * 32 + b"\x02" * 32 + b"\x03" * 32
    )
