"""Proofs of possession through the real broker and validator processes: a ``RotateKey``
without the new key's proof (D61) and an ``AddOperator`` with a forged one (D63) are refused
``BAD_KEY_PROOF`` by every validator alike, the honest rotation is accepted, and the chain
they certify is the pure core's replay of the log."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from harness.consortium import Consortium, new_key
from ledger.key_proofs import add_operator_args, register_identity_args, rotate_key_args
from ledger.members import key_key
from ledger.results import ResultCode
from tests.integration.test_consensus import check_chain, tx_id, wait_included

pytestmark = pytest.mark.integration


def test_rotations_and_operators_need_the_keys_proof_on_every_validator(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    with Consortium(
        bootstrap, tmp_path / "c", 2, prefix=f"rot{unique}.", block_interval_ms=200
    ) as c:
        _rotate_through_the_validators(c)
        _forged_operator_through_the_validators(c)


def _rotate_through_the_validators(c: Consortium) -> None:
    c.start_all()
    c.wait_ready(c.institutions)
    gov, device, new, thief = c.gov_key("inst-1"), new_key(), new_key(), new_key()
    register = register_identity_args(
        device, chain_id=c.chain_id, institution_id="inst-1", kind="DEVICE", label="d"
    )
    registered = c.tx(gov, "RegisterIdentity", register)
    c.send([registered])
    wait_included(c, Counter([tx_id(registered)]))

    honest_args = rotate_key_args(
        new, chain_id=c.chain_id, key_id=device.key_id, old_public_key=device.public_key
    )
    stolen = rotate_key_args(  # the thief's own proof of a rotation of the device to it
        thief, chain_id=c.chain_id, key_id=device.key_id, old_public_key=device.public_key
    )
    forged_args = {**honest_args, "new_key_proof": stolen["new_key_proof"]}
    forged = c.tx(device, "RotateKey", forged_args, nonce=0)
    c.send([forged])
    wait_included(c, Counter([tx_id(forged)]))
    honest = c.tx(device, "RotateKey", honest_args, nonce=0)
    c.send([honest])
    wait_included(c, Counter([tx_id(honest)]))
    entries = c.final_entries()
    assert [code for _, code in entries[tx_id(forged)]] == [ResultCode.BAD_KEY_PROOF]
    assert [code for _, code in entries[tx_id(honest)]] == [ResultCode.OK]
    _, replay = check_chain(c)  # every certificate and header is the pure core's
    state = replay.machine.state
    assert state.get(key_key(device.key_id))["active"] is False  # type: ignore[index]
    assert state.get(key_key(new.key_id))["active"] is True  # type: ignore[index]


def _forged_operator_through_the_validators(c: Consortium) -> None:
    """inst-2 tries to make a key it does not hold (the victim's) one of its operators, with
    the proof its own key made: refused, and the victim's key never enters the validator
    set (the chain's own replay says so, and so do the validators' certificates)."""
    gov2, victim, own = c.gov_key("inst-2"), new_key(), new_key()
    mine = add_operator_args(own, chain_id=c.chain_id, institution_id="inst-2")
    forged_args = {
        "operator_public_key": victim.public_key,
        "operator_key_proof": mine["operator_key_proof"],
    }
    forged = c.tx(gov2, "AddOperator", forged_args)
    c.send([forged])
    wait_included(c, Counter([tx_id(forged)]))
    assert [code for _, code in c.final_entries()[tx_id(forged)]] == [ResultCode.BAD_KEY_PROOF]
    _, replay = check_chain(c)
    assert replay.machine.state.get(key_key(victim.key_id)) is None
    members = replay.machine.validator_set().members
    assert victim.key_id not in members["inst-2"] and own.key_id not in members["inst-2"]
