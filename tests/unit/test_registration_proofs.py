"""``AddOperator``, ``RegisterIdentity`` and ``ProposeMember`` prove possession of every key
they register (D63): each forgery is refused ``BAD_KEY_PROOF`` and changes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ledger.errors import InvalidEvent
from ledger.key_proofs import (
    REGISTER_KEY_POP_DOMAIN,
    add_operator_args,
    propose_member_args,
    register_identity_args,
    registration_material,
    registration_message,
    registration_proof_valid,
)
from ledger.keys import TX_DOMAIN, KeyPair
from ledger.members import inst_key, key_key
from ledger.results import ResultCode
from ledger.tx import body_record, parse_tx
from schemas.codec import MAGIC, canonical, registry
from schemas.registry import SCHEMA_DIR, Registry
from tests.unit.chain_helpers import CHAIN, Driver, consortium, key

INST = "inst-0"


def _proof(signer: KeyPair, operation: str, args: dict[str, Any], **fields: Any) -> bytes:
    """``signer``'s signature of a registration message, with ``fields`` changed from the
    honest one of ``signer`` in ``operation(args)`` by :data:`INST` on :data:`CHAIN`."""
    message: dict[str, Any] = {
        "chain_id": CHAIN,
        "operation": operation,
        "role": "OPERATOR",
        "institution_id": INST,
        "public_key": signer.public_key,
        "material": registration_material(operation, args),
        **fields,
    }
    return signer.sign(REGISTER_KEY_POP_DOMAIN, registration_message(**message))


def _refused(d: Driver, operation: str, args: dict[str, Any], *new_keys: KeyPair) -> None:
    """One block with ``operation(args)`` by inst-0's governance key: refused with
    BAD_KEY_PROOF, nothing written, the nonce not consumed, none of ``new_keys`` on chain."""
    gov = d.gov(INST)
    state = d.machine.state
    nonce = state.get(key_key(gov.key_id))["next_nonce"]  # type: ignore[index]
    inst_before = state.get(inst_key(INST))
    executed = d.block([d.tx(gov, operation, args)])
    assert [r.code for r in executed.results] == [ResultCode.BAD_KEY_PROOF]
    assert executed.writes.entries == ()
    state = d.machine.state
    assert state.get(key_key(gov.key_id))["next_nonce"] == nonce  # type: ignore[index]
    assert state.get(inst_key(INST)) == inst_before
    assert all(state.get(key_key(k.key_id)) is None for k in new_keys)


# -- AddOperator ---------------------------------------------------------------------------


def _operator_forgeries(new: KeyPair, other: KeyPair) -> dict[str, dict[str, Any]]:
    honest = add_operator_args(new, chain_id=CHAIN, institution_id=INST)
    op = "AddOperator"
    return {
        "empty": {**honest, "operator_key_proof": b""},
        "zeros": {**honest, "operator_key_proof": bytes(64)},
        "by another key": {**honest, "operator_key_proof": _proof(other, op, honest)},
        "another key's own proof": {
            **honest,
            "operator_key_proof": add_operator_args(other, chain_id=CHAIN, institution_id=INST)[
                "operator_key_proof"
            ],
        },
        "another chain": {**honest, "operator_key_proof": _proof(new, op, honest, chain_id="x")},
        "another institution": {
            **honest,
            "operator_key_proof": _proof(new, op, honest, institution_id="inst-1"),
        },
        "another kind": {
            **honest,
            "operator_key_proof": register_identity_args(
                new, chain_id=CHAIN, institution_id=INST, kind="SERVICE", label=""
            )["key_proof"],
        },
        "governance role": {
            **honest,
            "operator_key_proof": propose_member_args(new, [], chain_id=CHAIN, institution_id=INST)[
                "governance_key_proof"
            ],
        },
    }


@pytest.mark.parametrize("forgery", list(_operator_forgeries(key("a"), key("b"))))
def test_add_operator_forgeries_are_refused(forgery: str) -> None:
    d = Driver(consortium(4))
    new, other = key("pop/new-op"), key("pop/other")
    _refused(d, "AddOperator", _operator_forgeries(new, other)[forgery], new, other)


def test_add_operator_with_the_keys_proof_is_accepted() -> None:
    d = Driver(consortium(4))
    new = key("pop/new-op")
    args = add_operator_args(new, chain_id=CHAIN, institution_id=INST)
    assert d.codes([d.tx(d.gov(INST), "AddOperator", args)]) == ["OK"]
    inst = d.machine.state.get(inst_key(INST))
    assert inst is not None and new.key_id in inst["operator_key_ids"]
    # the proof names inst-0: inst-1 cannot replay it for a key of its own
    again = add_operator_args(key("pop/op-2"), chain_id=CHAIN, institution_id=INST)
    assert d.codes([d.tx(d.gov("inst-1"), "AddOperator", again)]) == ["BAD_KEY_PROOF"]


# -- RegisterIdentity ----------------------------------------------------------------------


def _identity_forgeries(new: KeyPair, other: KeyPair) -> dict[str, dict[str, Any]]:
    def honest_of(k: KeyPair, kind: str = "DEVICE", label: str = "d") -> dict[str, Any]:
        return register_identity_args(
            k, chain_id=CHAIN, institution_id=INST, kind=kind, label=label
        )

    honest = honest_of(new)
    op = "RegisterIdentity"
    return {
        "short": {**honest, "key_proof": honest["key_proof"][:63]},
        "by another key": {**honest, "key_proof": _proof(other, op, honest, role="DEVICE")},
        "another key's own proof": {**honest, "key_proof": honest_of(other)["key_proof"]},
        "another chain": {
            **honest,
            "key_proof": _proof(new, op, honest, role="DEVICE", chain_id="x"),
        },
        "another institution": {
            **honest,
            "key_proof": _proof(new, op, honest, role="DEVICE", institution_id="inst-1"),
        },
        "another kind": {
            **honest,
            "key_proof": add_operator_args(new, chain_id=CHAIN, institution_id=INST)[
                "operator_key_proof"
            ],
        },
        "another role": {**honest, "key_proof": honest_of(new, kind="SERVICE")["key_proof"]},
        "another label": {**honest, "key_proof": honest_of(new, label="other")["key_proof"]},
        "swapped key": {**honest_of(other), "public_key": new.public_key},
    }


@pytest.mark.parametrize("forgery", list(_identity_forgeries(key("a"), key("b"))))
def test_register_identity_forgeries_are_refused(forgery: str) -> None:
    d = Driver(consortium(4))
    new, other = key("pop/new-id"), key("pop/other")
    _refused(d, "RegisterIdentity", _identity_forgeries(new, other)[forgery], new, other)


def test_register_identity_with_the_keys_proof_is_accepted_by_gov_or_service() -> None:
    d = Driver(consortium(4))
    svc, dev = key("pop/svc"), key("pop/dev")
    register = register_identity_args(
        svc, chain_id=CHAIN, institution_id=INST, kind="SERVICE", label="svc"
    )
    assert d.codes([d.tx(d.gov(INST), "RegisterIdentity", register)]) == ["OK"]
    device = register_identity_args(
        dev, chain_id=CHAIN, institution_id=INST, kind="DEVICE", label="d"
    )
    assert d.codes([d.tx(svc, "RegisterIdentity", device)]) == ["OK"]
    record = d.machine.state.get(key_key(dev.key_id))
    assert record is not None and record["role"] == "DEVICE"


# -- ProposeMember -------------------------------------------------------------------------


def _member_forgeries(gov: KeyPair, op: KeyPair, other: KeyPair) -> dict[str, dict[str, Any]]:
    def honest_of(g: KeyPair, ops: list[KeyPair], inst: str = "newco") -> dict[str, Any]:
        return propose_member_args(g, ops, chain_id=CHAIN, institution_id=inst)

    honest = honest_of(gov, [op])
    gp, (opp,) = honest["governance_key_proof"], honest["operator_key_proofs"]
    pm = "ProposeMember"
    return {
        "missing operator proofs": {**honest, "operator_key_proofs": []},
        "one proof too many": {**honest, "operator_key_proofs": [opp, opp]},
        "governance proof by another key": {
            **honest,
            "governance_key_proof": _proof(
                other, pm, honest, role="GOVERNANCE", institution_id="newco"
            ),
        },
        "operator proof by the governance key": {
            **honest,
            "operator_key_proofs": [
                _proof(gov, pm, honest, role="OPERATOR", institution_id="newco")
            ],
        },
        "another chain": {
            **honest,
            "governance_key_proof": propose_member_args(
                gov, [op], chain_id="x", institution_id="newco"
            )["governance_key_proof"],
        },
        "another institution": {
            **honest,
            "operator_key_proofs": honest_of(gov, [op], inst="other")["operator_key_proofs"],
        },
        "another kind": {
            **honest,
            "operator_key_proofs": [
                add_operator_args(op, chain_id=CHAIN, institution_id="newco")["operator_key_proof"]
            ],
        },
        "roles swapped": {**honest, "governance_key_proof": opp, "operator_key_proofs": [gp]},
        "keys swapped": {
            **honest,
            "governance_public_key": op.public_key,
            "operator_public_keys": [gov.public_key],
        },
        "keys and proofs swapped": {
            **honest,
            "governance_public_key": op.public_key,
            "operator_public_keys": [gov.public_key],
            "governance_key_proof": opp,
            "operator_key_proofs": [gp],
        },
        "another proposal's proofs": {
            **honest,
            "governance_key_proof": honest_of(gov, [op, other])["governance_key_proof"],
        },
    }


@pytest.mark.parametrize("forgery", list(_member_forgeries(key("a"), key("b"), key("c"))))
def test_propose_member_forgeries_are_refused(forgery: str) -> None:
    d = Driver(consortium(4))
    gov, op, other = key("pop/m-gov"), key("pop/m-op"), key("pop/other")
    _refused(d, "ProposeMember", _member_forgeries(gov, op, other)[forgery], gov, op, other)
    assert d.machine.state.get(inst_key("newco")) is None


def test_an_admission_with_every_keys_proof_is_proposed_and_enacted() -> None:
    d = Driver(consortium(1))
    gov, op = key("pop/m-gov"), key("pop/m-op")
    args = propose_member_args(gov, [op], chain_id=CHAIN, institution_id="newco")
    assert d.codes([d.tx(d.gov(INST), "ProposeMember", args)]) == ["OK"]
    inst = d.machine.state.get(inst_key("newco"))
    assert inst is not None and inst["operator_key_ids"] == [op.key_id]
    assert inst["governance_key_id"] == gov.key_id


# -- envelopes of the retired schemas (no proof fields) ----------------------------------


def _d61_era() -> Registry:
    """The writer of between D61 and D63: today's schemas with the three D63 definitions
    retired (RotateKey already with its proof)."""
    defs = {}
    retired = SCHEMA_DIR / "retired"
    for path in [
        *SCHEMA_DIR.glob("*.avsc"),
        *(retired / f"{n}.v1.avsc" for n in ("AddOperator", "ProposeMember", "RegisterIdentity")),
    ]:
        schema = json.loads(path.read_text())
        defs[f"pantheon.{schema['name']}"] = schema
    return Registry(defs)


def _without_proofs(operation: str, new: KeyPair) -> dict[str, Any]:
    if operation == "AddOperator":
        return {"operator_public_key": new.public_key}
    if operation == "RegisterIdentity":
        return {"public_key": new.public_key, "kind": "DEVICE", "label": "d"}
    return {
        "institution_id": "newco",
        "governance_public_key": new.public_key,
        "operator_public_keys": [],
    }


@pytest.mark.parametrize("operation", ["AddOperator", "RegisterIdentity", "ProposeMember"])
def test_an_envelope_without_proofs_decodes_and_is_refused(operation: str) -> None:
    """An envelope written before D63 (no proof field) still decodes, by its retired
    fingerprint, to a registration without a proof, which is refused: an old-format envelope
    is no way around the check."""
    d = Driver(consortium(4))
    gov, new = d.gov(INST), key(f"pop/v1/{operation}")
    old = _d61_era()
    body = body_record(CHAIN, gov.key_id, 0, operation, _without_proofs(operation, new))
    envelope = {
        "body": body,
        "public_key": gov.public_key,
        "signature": gov.sign(TX_DOMAIN, canonical("TxBody", body, reg=old)),
    }
    head = MAGIC + old.by_name("TxEnvelope").fingerprint_bytes
    raw = head + canonical("TxEnvelope", envelope, reg=old)
    assert old.by_name("TxEnvelope").fingerprint != registry().by_name("TxEnvelope").fingerprint
    parsed = parse_tx(raw)
    assert parsed.operation == operation and not any("proof" in k for k in parsed.args)
    executed = d.block([raw])
    assert [r.code for r in executed.results] == [ResultCode.BAD_KEY_PROOF]
    assert executed.writes.entries == ()
    assert d.machine.state.get(key_key(new.key_id)) is None


# -- the helpers -----------------------------------------------------------------------------


def test_the_registration_message_is_the_documented_bytes() -> None:
    new = key("pop/vector")
    message = registration_message(
        chain_id="c",
        operation="RegisterIdentity",
        role="USER",
        institution_id="i",
        public_key=new.public_key,
        material=b"lbl",
    )
    expected = (
        b"\x00\x01c"
        + b"\x00\x10RegisterIdentity"
        + b"\x00\x04USER"
        + b"\x00\x01i"
        + b"\x00\x20"
        + new.public_key
        + b"\x00\x03lbl"
    )
    assert message == expected
    assert REGISTER_KEY_POP_DOMAIN == b"pantheon/register-key-pop/v1\x00"


def test_the_builders_refuse_bad_input_with_typed_errors() -> None:
    new = key("pop/typed")
    with pytest.raises(InvalidEvent):  # a role the operation does not give
        registration_message(
            chain_id=CHAIN,
            operation="AddOperator",
            role="GOVERNANCE",
            institution_id=INST,
            public_key=new.public_key,
            material=b"",
        )
    with pytest.raises(InvalidEvent):  # an operation that registers no key with a proof
        registration_material("RotateKey", {})
    with pytest.raises(InvalidEvent):
        add_operator_args(new, chain_id="x" * 65536, institution_id=INST)
    with pytest.raises(InvalidEvent):
        register_identity_args(new, chain_id=CHAIN, institution_id=INST, kind="ADMIN", label="")
    with pytest.raises(InvalidEvent):
        register_identity_args(
            new, chain_id=CHAIN, institution_id=INST, kind="USER", label="é" * 40000
        )


def test_the_check_never_raises_on_malformed_input() -> None:
    new = key("pop/malformed")
    args = add_operator_args(new, chain_id=CHAIN, institution_id=INST)
    common: dict[str, Any] = {
        "chain_id": CHAIN,
        "operation": "AddOperator",
        "role": "OPERATOR",
        "institution_id": INST,
        "public_key": new.public_key,
    }
    assert registration_proof_valid(args["operator_key_proof"], args=args, **common)
    assert not registration_proof_valid("x" * 64, args=args, **common)
    assert not registration_proof_valid(None, args=args, **common)
    bad = {**common, "public_key": new.public_key[:31]}
    assert not registration_proof_valid(args["operator_key_proof"], args=args, **bad)
    assert not registration_proof_valid(
        args["operator_key_proof"], args=args, **{**common, "operation": "Nope"}
    )
    assert not registration_proof_valid(
        args["operator_key_proof"], args={}, **{**common, "operation": "ProposeMember"}
    )


def test_both_earlier_writer_generations_still_decode() -> None:
    """Envelopes written before D61 and between D61 and D63 keep their fingerprints
    (``schemas/retired/generations.json``); the D61-era writer is the one built here."""
    known = registry()
    before_d61 = int.from_bytes(bytes.fromhex("fa5da07a74efbab8"), "little")
    d61_era = int.from_bytes(bytes.fromhex("f0d381d4b0beccdb"), "little")
    assert _d61_era().by_name("TxEnvelope").fingerprint == d61_era
    for fingerprint in (before_d61, d61_era):
        assert known.by_fingerprint(fingerprint).name == "pantheon.TxEnvelope"
