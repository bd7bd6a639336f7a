"""``ledger.audit_votes``: the audit's check of the votes log, driven directly."""

from __future__ import annotations

from ledger.audit_findings import ERROR, WARNING, Findings
from ledger.audit_votes import VoteAudit
from ledger.execution import ExecutedBlock
from ledger.votes import sign_vote
from tests.unit.chain_helpers import Driver, consortium, key


def _block() -> tuple[Driver, ExecutedBlock]:
    driver = Driver(consortium(4))
    gov = driver.gov("inst-0")
    args = {"data_id": "v", "sha256": bytes(32), "metadata": ""}
    return driver, driver.block([driver.tx(gov, "AnchorData", args)])


def test_a_malformed_vote_is_a_warning_naming_its_offset() -> None:
    findings = Findings()
    VoteAudit(findings, "votes", 0).add(7, b"not a vote", 0)
    [found] = findings.items
    assert (found.kind, found.severity, found.offset, found.topic) == (
        "vote.malformed",
        WARNING,
        7,
        "votes",
    )


def test_a_stranger_vote_is_reported_once_its_height_is_replayed() -> None:
    _, executed = _block()
    findings = Findings()
    audit = VoteAudit(findings, "votes", 0)
    stranger = sign_vote(key("stranger"), height=1, block_hash=executed.block_hash)
    audit.add(3, stranger.encode(), 0)
    assert findings.items == []  # the validator set of height 1 is not known yet
    audit.replayed(executed.validator_set, 1, executed.block_hash)
    assert [f.kind for f in findings.items] == ["vote.non_member"]
    assert findings.items[0].details["signature_valid"] is True


def test_a_quorum_on_another_hash_is_an_error() -> None:
    driver, executed = _block()
    findings = Findings()
    audit = VoteAudit(findings, "votes", 0)
    other = bytes(32)
    for _, (_, ops) in sorted(driver.plan.keys.items()):
        audit.add(0, sign_vote(ops[0], height=1, block_hash=other).encode(), 0)
    audit.replayed(executed.validator_set, 1, executed.block_hash)
    assert [(f.kind, f.severity) for f in findings.items] == [("votes.quorum_on_other_hash", ERROR)]


def test_votes_at_or_below_the_checkpoint_are_not_checked() -> None:
    _, executed = _block()
    findings = Findings()
    audit = VoteAudit(findings, "votes", 1)
    audit.add(0, sign_vote(key("stranger"), height=1, block_hash=bytes(32)).encode(), 1)
    audit.replayed(executed.validator_set, 1, executed.block_hash)
    assert findings.items == []
