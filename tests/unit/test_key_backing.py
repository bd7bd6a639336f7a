"""Which key activations certified entries back (ledger.key_backing, D75), against the ledger
machine's own ``chain.key_activity`` rows."""

from __future__ import annotations

from typing import Any

from ledger.execution import ExecutedBlock
from ledger.iam_events import key_activity
from ledger.key_backing import KeyBacking, Row, as_row
from ledger.key_proofs import register_identity_args, rotate_key_args
from ledger.results import ResultCode
from ledger.tx import parse_tx, sign_tx
from tests.unit.chain_helpers import CHAIN, Driver, consortium, key


def feed(backing: KeyBacking, executed: ExecutedBlock, names: tuple[str, ...] = ()) -> None:
    for tx, result in zip(executed.transactions, executed.results, strict=True):
        if tx is not None and result.code is ResultCode.OK:
            backing.add(tx, executed.header.height, names)


def rows(executed: ExecutedBlock, before: dict[str, Any]) -> list[Row]:
    """The machine's key_activity rows of ``executed`` (state before it: ``before``)."""
    found = key_activity(executed.writes, executed.header.height, before.get)
    return [as_row(r) for r in found]


def snapshot(driver: Driver) -> dict[str, Any]:
    return {k: v for k, v in driver.machine.state.items() if k.startswith("key/")}


def register(driver: Driver, inst: str, label: str, kind: str = "SERVICE") -> bytes:
    args = register_identity_args(
        key(label), chain_id=CHAIN, institution_id=inst, kind=kind, label=label
    )
    return driver.tx(driver.gov(inst), "RegisterIdentity", args)


def test_every_activation_the_machine_writes_is_backed_and_altered_ones_are_not() -> None:
    driver = Driver(consortium(4))
    backing = KeyBacking.from_genesis(driver.plan.genesis)
    svc, new = key("svc"), key("svc-new")
    before = snapshot(driver)
    first = driver.block(
        [register(driver, "inst-0", "svc"), register(driver, "inst-1", "u", "USER")]
    )
    feed(backing, first)
    written = rows(first, before)
    before = snapshot(driver)
    rotate = rotate_key_args(new, chain_id=CHAIN, key_id=svc.key_id, old_public_key=svc.public_key)
    second = driver.block([driver.tx(svc, "RotateKey", rotate)])
    feed(backing, second)
    written += rows(second, before)
    active = [r for r in written if r[4]]
    assert (svc.key_id, 1, "inst-0", "SERVICE", True, svc.public_key) in active
    assert (new.key_id, 2, "inst-0", "SERVICE", True, new.public_key) in active
    assert all(backing.backs(r) for r in active)
    assert (svc.key_id, 2, "inst-0", "SERVICE", False, svc.public_key) in written
    assert backing.backs((svc.key_id, 2, "inst-0", "SERVICE", False, svc.public_key))
    row = (svc.key_id, 1, "inst-0", "SERVICE", True, svc.public_key)
    for forged in (
        (svc.key_id, 1, "inst-1", "SERVICE", True, svc.public_key),  # another institution
        (svc.key_id, 1, "inst-0", "GOVERNANCE", True, svc.public_key),  # another role
        (svc.key_id, 3, "inst-0", "SERVICE", True, svc.public_key),  # another height
        (key("x").key_id, 1, "inst-0", "SERVICE", True, key("x").public_key),  # another key
    ):
        assert forged != row and not backing.backs(forged)


def test_genesis_keys_are_backed_at_height_zero_only() -> None:
    plan = consortium(4)
    backing = KeyBacking.from_genesis(plan.genesis)
    gov = plan.keys["inst-2"][0]
    assert backing.backs((gov.key_id, 0, "inst-2", "GOVERNANCE", True, gov.public_key))
    assert not backing.backs((gov.key_id, 0, "inst-2", "SERVICE", True, gov.public_key))
    assert not backing.backs((gov.key_id, 5, "inst-2", "GOVERNANCE", True, gov.public_key))


def test_the_institution_comes_from_the_proof_when_the_sender_is_unknown() -> None:
    plan = consortium(4)
    driver = Driver(plan)
    svc = key("svc")
    tx = parse_tx(register(driver, "inst-3", "svc"))
    stranger = KeyBacking("test-chain")  # knows no sender: only the names offered
    stranger.add(tx, 7, ["inst-0", "inst-3"])
    assert stranger.backs((svc.key_id, 7, "inst-3", "SERVICE", True, svc.public_key))
    assert not stranger.backs((svc.key_id, 7, "inst-0", "SERVICE", True, svc.public_key))
    unnamed = KeyBacking("test-chain")
    unnamed.add(tx, 7, ["inst-0", "inst-1"])  # the right one not offered: nothing backed
    assert not unnamed.backs((svc.key_id, 7, "inst-3", "SERVICE", True, svc.public_key))


def test_other_chains_and_unbacked_rotations_back_nothing() -> None:
    plan = consortium(4)
    backing = KeyBacking.from_genesis(plan.genesis)
    gov, svc = plan.keys["inst-0"][0], key("svc")
    args = register_identity_args(
        svc, chain_id="other-chain", institution_id="inst-0", kind="SERVICE", label="x"
    )
    backing.add(
        parse_tx(
            sign_tx(gov, chain_id="other-chain", nonce=0, operation="RegisterIdentity", args=args)
        ),
        1,
        ["inst-0"],
    )
    assert not backing.backs((svc.key_id, 1, "inst-0", "SERVICE", True, svc.public_key))
    new, stranger = key("new"), key("stranger")
    rotate = rotate_key_args(
        new, chain_id=CHAIN, key_id=stranger.key_id, old_public_key=stranger.public_key
    )
    backing.add(
        parse_tx(sign_tx(stranger, chain_id=CHAIN, nonce=0, operation="RotateKey", args=rotate)), 2
    )
    assert not backing.backs((new.key_id, 2, "inst-0", "SERVICE", True, new.public_key))


def test_revocations_and_rotations_are_backed_and_the_history_is_the_backed_rows() -> None:
    """A key's history comes from certified entries alone, deactivations included, so a row
    inserted into the table (a deactivation of a genuine key: a rollback on a fresh reader)
    is never in it."""
    driver = Driver(consortium(4))
    backing = KeyBacking.from_genesis(driver.plan.genesis)
    svc, spare, new = key("svc"), key("spare"), key("svc-new")
    before = snapshot(driver)
    first = driver.block([register(driver, "inst-0", "svc"), register(driver, "inst-0", "spare")])
    feed(backing, first)
    written = rows(first, before)
    before = snapshot(driver)
    rotate = rotate_key_args(new, chain_id=CHAIN, key_id=svc.key_id, old_public_key=svc.public_key)
    revoke = {"key_id": spare.key_id}
    second = driver.block(
        [
            driver.tx(svc, "RotateKey", rotate),
            driver.tx(driver.gov("inst-0"), "RevokeIdentity", revoke),
        ]
    )
    feed(backing, second)
    written += rows(second, before)
    assert all(backing.backs(r) for r in written), written
    keys = [svc.key_id, spare.key_id, new.key_id]
    assert sorted(backing.rows_of(keys, 2)) == sorted(written)
    assert sorted(backing.rows_of(keys, 1)) == sorted(r for r in written if r[1] <= 1)
    inserted = (new.key_id, 2, "inst-0", "SERVICE", False, new.public_key)
    assert not backing.backs(inserted) and inserted not in backing.rows_of(keys, 9)
