"""The chain-following rule every reader shares (ledger/follower.py): the certificate step
agrees with ``verify_finalized``, the replay step names what differs, the canonical copy is
the first certified copy that matches, and the follower cuts and executes as validators do."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from ledger.blocks import EntryResult, encode_finalized, tx_root
from ledger.cutter import TimeToCut
from ledger.errors import DecodeError, ProofError
from ledger.execution import ExecutedBlock
from ledger.finality import QuorumCertificate, verify_finalized
from ledger.follower import (
    Certified,
    ChainFollower,
    Rejected,
    canonical,
    check_copy,
    compare,
)
from ledger.genesis import ConsortiumPlan
from ledger.results import ResultCode
from ledger.votes import sign_vote
from tests.unit.chain_helpers import CHAIN, Driver, consortium


def _anchors(driver: Driver, count: int, tag: str) -> list[bytes]:
    gov = driver.gov("inst-0")
    args = [{"data_id": f"{tag}-{i}", "sha256": bytes(32), "metadata": "{}"} for i in range(count)]
    return [driver.tx(gov, "AnchorData", a) for a in args]


def _copy(
    plan: ConsortiumPlan,
    executed: ExecutedBlock,
    *,
    header_changes: dict[str, Any] | None = None,
    results: tuple[EntryResult, ...] | None = None,
    signers: slice = slice(None),
) -> bytes:
    """A FinalizedBlock of ``executed`` (optionally altered), signed by a quorum of operators
    (``signers`` picks which institutions, in name order)."""
    header = replace(executed.header, **(header_changes or {}))
    block_hash = header.hash()
    ops = [ops[0] for _, (_, ops) in sorted(plan.keys.items())][signers]
    votes = tuple(sign_vote(k, height=header.height, block_hash=block_hash) for k in ops)
    quorum = executed.validator_set.quorum
    cert = QuorumCertificate(height=header.height, block_hash=block_hash, votes=votes[:quorum])
    return encode_finalized(header, cert.record(), results or executed.results)


@pytest.fixture(scope="module")
def chain() -> tuple[ConsortiumPlan, list[ExecutedBlock]]:
    plan = consortium(4)
    driver = Driver(plan)
    return plan, [driver.block(_anchors(driver, 3, f"b{h}")) for h in (1, 2)]


def test_check_copy_agrees_with_verify_finalized(
    chain: tuple[ConsortiumPlan, list[ExecutedBlock]],
) -> None:
    plan, (first, second) = chain
    good = _copy(plan, second)
    forged = _copy(plan, second, header_changes={"state_root": bytes(32)}, signers=slice(0, 0))
    for raw in (good, forged, b"\x00garbage"):
        for validators in (second.validator_set, first.validator_set):
            try:
                verify_finalized(raw, validators)
                expected: str | None = None
            except (ProofError, DecodeError) as exc:
                expected = str(exc)
            verdict = check_copy(7, raw, validators)
            assert verdict.offset == 7 and verdict.raw == raw
            if expected is None:
                assert isinstance(verdict, Certified)
                assert verdict.certificate.block_hash == second.block_hash
            else:
                assert isinstance(verdict, Rejected) and verdict.reason == expected


def test_compare_names_the_differing_fields_and_results(
    chain: tuple[ConsortiumPlan, list[ExecutedBlock]],
) -> None:
    plan, (_, block) = chain
    vs = block.validator_set
    same = check_copy(0, _copy(plan, block), vs)
    assert isinstance(same, Certified) and not compare(block, same)
    other_root = check_copy(1, _copy(plan, block, header_changes={"state_root": b"\x01" * 32}), vs)
    assert isinstance(other_root, Certified)
    mismatch = compare(block, other_root)
    assert mismatch and list(mismatch.header) == ["state_root"] and not mismatch.positions
    assert mismatch.header["state_root"] == (block.header.state_root, b"\x01" * 32)
    # A quorum certifying other results: tx_root differs, and so do the results at position 1.
    lied = tuple(
        replace(r, code=ResultCode.FORBIDDEN) if i == 1 else r for i, r in enumerate(block.results)
    )
    other = _copy(plan, block, header_changes={"tx_root": tx_root(lied)}, results=lied)
    verdict = check_copy(2, other, vs)
    assert isinstance(verdict, Certified)
    differs = compare(block, verdict)
    assert list(differs.header) == ["tx_root"] and differs.positions == (1,)
    assert "tx_root" in differs.describe() and "position 1" in differs.describe()


def test_canonical_is_the_first_certified_copy_that_matches(
    chain: tuple[ConsortiumPlan, list[ExecutedBlock]],
) -> None:
    plan, (_, block) = chain
    vs = block.validator_set
    copies = [
        _copy(plan, block, signers=slice(0, 0)),  # no votes: rejected
        _copy(plan, block, header_changes={"timestamp_ms": 1}),  # certified, differs
        _copy(plan, block, signers=slice(0, None)),  # the canonical one
        _copy(plan, block, signers=slice(0, None)),  # identical bytes
        _copy(plan, block, signers=slice(1, None)),  # another quorum: a variant
    ]
    verdicts = [check_copy(i, raw, vs) for i, raw in enumerate(copies)]
    judged = list(canonical(block, verdicts))
    assert [type(v).__name__ for v, _, _ in judged] == ["Rejected"] + ["Certified"] * 4
    assert [m is not None and bool(m) for _, m, _ in judged] == [False, True, False, False, False]
    assert [chosen for _, _, chosen in judged] == [False, False, True, False, False]
    assert judged[2][0].raw != judged[4][0].raw


def test_follower_cuts_and_executes_as_the_validators_do(
    chain: tuple[ConsortiumPlan, list[ExecutedBlock]],
) -> None:
    plan, _ = chain
    driver = Driver(plan)
    log: list[tuple[int, int, bytes]] = []
    expected = []
    for h in range(1, 4):
        raws = _anchors(driver, 3, f"f{h}")
        raws.append(TimeToCut(chain_id=CHAIN, height=h, producer=b"x").encode())
        log += [(len(log) + i, 1000 + len(log) + i, raw) for i, raw in enumerate(raws)]
        expected.append(driver.block(raws[:-1]))
    tail = _anchors(driver, 2, "tail")
    log += [(len(log) + i, 5000, raw) for i, raw in enumerate(tail)]
    follower = ChainFollower(plan.genesis)
    got = [b for b in (follower.feed(*m) for m in log) if b is not None]
    assert [b.block_hash for b in got] == [b.block_hash for b in expected]
    assert follower.height == 3 and follower.pending_entries == 2
    assert follower.last_offset == len(log) - 1
