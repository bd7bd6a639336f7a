"""The core's hook for signatures verified elsewhere (the audit's worker processes).

``parse_tx(signature_verified=True)`` and ``execute_block(verified_signatures=...)`` skip only
the Ed25519 verify call. For any input, vouching exactly for what
:func:`~ledger.tx.signature_verifies` accepts gives the normal result; vouching for less
changes nothing; the hook trusts its caller, so vouching for a bad signature is the one way to
change a result (shown here so the contract is explicit)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.cutter import TimeToCut
from ledger.execution import ExecutedBlock, LedgerMachine
from ledger.results import ResultCode
from ledger.tx import (
    Transaction,
    TxRejected,
    parse_tx,
    sign_tx,
    signature_verifies,
    signatures_verify,
)
from schemas.codec import decode, encode
from tests.unit.chain_helpers import CHAIN, Driver, consortium, key

ARGS = {"data_id": "d1", "sha256": b"\x01" * 32, "metadata": ""}


def outcome(raw: bytes, **kw: Any) -> tuple[str, bytes | None] | Transaction:
    try:
        return parse_tx(raw, **kw)
    except TxRejected as rejected:
        return rejected.code.name, rejected.tx_id


def resign(raw: bytes, **changes: Any) -> bytes:
    """``raw`` with envelope fields replaced (the signature no longer matches, unless kept)."""
    _, env = decode(raw)
    body = {**env["body"], **changes.pop("body", {})}
    return encode("TxEnvelope", {**env, "body": body, **changes})


def variants() -> dict[str, bytes]:
    """Every way an entry can fail before or at the signature check, and a good one."""
    signer, other = key("alice"), key("mallory")
    good = sign_tx(signer, chain_id="c", nonce=0, operation="AnchorData", args=ARGS)
    return {
        "good": good,
        "forged_nonce": resign(good, body={"nonce": 1}),
        "flipped_signature": good[:-1] + bytes([good[-1] ^ 1]),
        "other_key": resign(good, public_key=other.public_key),
        "other_key_and_sender": resign(
            good, public_key=other.public_key, body={"sender": other.key_id}
        ),
        "short_signature": resign(good, signature=b"x"),
        "long_key": resign(good, public_key=signer.public_key + b"\x00"),
        "truncated": good[:-3],
        "extended": good + b"\x00",
        "garbage": b"\x00" * 200,
        "empty": b"",
        "marker": TimeToCut(chain_id="c", height=1, producer=b"x").encode(),
        "oversize": sign_tx(
            signer,
            chain_id="c",
            nonce=0,
            operation="AnchorData",
            args={**ARGS, "metadata": "m" * 70_000},
        ),
    }


@pytest.mark.parametrize("name", sorted(variants()))
def test_signature_verifies_agrees_with_parse_tx(name: str) -> None:
    raw = variants()[name]
    vouched = signature_verifies(raw)
    assert vouched == (name in {"good", "oversize"})  # the size is parse_tx's check
    assert outcome(raw, signature_verified=vouched) == outcome(raw)
    assert outcome(raw, max_tx_bytes=1 << 20, signature_verified=vouched) == outcome(
        raw, max_tx_bytes=1 << 20
    )


def test_every_other_check_still_runs_when_vouched() -> None:
    v = variants()
    expected = {
        "other_key": "BAD_SIGNATURE",
        "short_signature": "MALFORMED",
        "long_key": "MALFORMED",
        "truncated": "MALFORMED",
        "extended": "MALFORMED",
        "garbage": "MALFORMED",
        "empty": "MALFORMED",
        "marker": "MALFORMED",
        "oversize": "TOO_LARGE",
    }
    for name, code in expected.items():
        result = outcome(v[name], signature_verified=True)
        assert isinstance(result, tuple) and result[0] == code, name
        assert result == outcome(v[name]), name


def test_the_flag_is_trusted_not_checked() -> None:
    """A caller that vouches for a bad signature gets the envelope through: the hook trusts it."""
    forged = variants()["forged_nonce"]
    assert outcome(forged)[0] == "BAD_SIGNATURE"  # type: ignore[index]
    tx = parse_tx(forged, signature_verified=True)
    assert tx.nonce == 1


def test_the_batch_gives_each_envelope_its_own_answer() -> None:
    """``signatures_verify`` (one batch) answers as ``signature_verifies`` one by one, in
    order, with good, forged and non-envelope entries mixed (and repeated)."""
    v = variants()
    raws = [v[name] for name in sorted(v)] + [v["good"], v["flipped_signature"], v["good"]]
    assert signatures_verify(raws) == [signature_verifies(raw) for raw in raws]
    assert signatures_verify([v["good"]] * 3) == [True] * 3
    assert signatures_verify([]) == []


@settings(max_examples=200, deadline=None)
@given(
    position=st.integers(min_value=0, max_value=400),
    value=st.integers(min_value=0, max_value=255),
    cut=st.integers(min_value=0, max_value=3),
)
def test_signature_verifies_agrees_on_mutated_envelopes(
    position: int, value: int, cut: int
) -> None:
    """Any byte changed (and some bytes cut): vouching by signature_verifies never changes the
    outcome of parse_tx."""
    good = variants()["good"]
    raw = bytearray(good)
    raw[position % len(raw)] = value
    mutated = bytes(raw[: len(raw) - cut])
    assert outcome(mutated, signature_verified=signature_verifies(mutated)) == outcome(mutated)


# -- blocks ---------------------------------------------------------------------------------------


def block_entries(d: Driver) -> list[bytes]:
    """One block's worth of entries: accepted ones and every kind of rejection."""
    gov0, gov1 = d.gov("inst-0"), d.gov("inst-1")
    anchor = {"sha256": bytes(32), "metadata": ""}
    good = [d.tx(gov0, "AnchorData", {**anchor, "data_id": f"g{i}"}) for i in range(4)]
    # a correct nonce but a broken signature: only the signature check rejects it
    bad_sig = d.tx(gov1, "AnchorData", {**anchor, "data_id": "bad"})
    bad_sig = bad_sig[:-1] + bytes([bad_sig[-1] ^ 1])
    d.nonces[gov1.key_id] -= 1
    after = d.tx(gov1, "AnchorData", {**anchor, "data_id": "after"})  # the same nonce, valid
    wrong_chain = sign_tx(
        gov0, chain_id="other", nonce=9, operation="AnchorData", args={**anchor, "data_id": "w"}
    )
    stranger = sign_tx(
        key("stranger"),
        chain_id=CHAIN,
        nonce=0,
        operation="AnchorData",
        args={**anchor, "data_id": "s"},
    )
    stale = d.tx(gov0, "AnchorData", {**anchor, "data_id": "stale"}, nonce=0)
    other_key = resign(good[0], public_key=gov1.public_key)
    return [
        *good[:2],
        bad_sig,
        good[2],
        after,
        wrong_chain,
        stranger,
        stale,
        other_key,
        b"garbage",
        good[3],
        good[1],
    ]


def run_block(vouch: str) -> tuple[ExecutedBlock, list[bytes]]:
    d = Driver(consortium(3))
    d.block(
        [d.tx(d.gov("inst-2"), "AnchorData", {"data_id": "x", "sha256": bytes(32), "metadata": ""})]
    )
    raws = block_entries(d)
    verified = {raw for raw in raws if signature_verifies(raw)}
    chosen: set[bytes] = {
        "none": set(),
        "exact": verified,
        "some": set(sorted(verified)[::2]),
        "hostile": verified | {raws[2]},  # the broken signature, wrongly vouched for
        "everything": set(raws),
    }[vouch]
    cut = d.cut(raws)
    executed = d.machine.execute(cut, verified_signatures=frozenset(chosen))
    again = LedgerMachine.resume(d.plan.genesis, d.machine.state, d.machine.last_hash)
    assert again.apply(cut, verified_signatures=chosen) == executed  # apply agrees
    return executed, raws


def test_block_codes_cover_every_rejection() -> None:
    executed, _ = run_block("none")
    assert [r.code.name for r in executed.results] == [
        "OK",
        "OK",
        "BAD_SIGNATURE",
        "OK",
        "OK",
        "WRONG_CHAIN",
        "UNKNOWN_SENDER",
        "BAD_NONCE",
        "BAD_SIGNATURE",
        "MALFORMED",
        "OK",
        "BAD_NONCE",
    ]


@pytest.mark.parametrize("vouch", ["exact", "some"])
def test_vouched_signatures_give_identical_blocks(vouch: str) -> None:
    normal, _ = run_block("none")
    executed, _ = run_block(vouch)
    assert executed.header == normal.header
    assert executed.header.hash() == normal.header.hash()
    assert executed.results == normal.results
    assert executed.writes == normal.writes
    assert executed.validator_set == normal.validator_set


@pytest.mark.parametrize("vouch", ["hostile", "everything"])
def test_a_hostile_caller_changes_only_what_it_vouches_for(vouch: str) -> None:
    """The hook trusts the caller: the broken signature it vouched for is accepted (and the
    valid envelope with the same nonce after it becomes BAD_NONCE). Every other check still
    ran: the envelope whose key is not the sender's stays BAD_SIGNATURE, garbage MALFORMED."""
    normal, _ = run_block("none")
    executed, _ = run_block(vouch)
    got = [r.code for r in executed.results]
    want = [r.code for r in normal.results]
    want[2], want[4] = ResultCode.OK, ResultCode.BAD_NONCE
    assert got == want
    assert executed.header.tx_root != normal.header.tx_root
    assert executed.header.state_root != normal.header.state_root
