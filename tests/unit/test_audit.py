"""The pure audit (ledger/audit.py): an in-memory chain audits clean; every kind of tampering
with the logs is reported precisely; table, Layer-2 and anchor checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.audit import ChainAudit
from ledger.audit_findings import ERROR, INFO, WARNING, Finding
from ledger.blocks import (
    EntryResult,
    block_receipts,
    decode_finalized,
    encode_finalized,
    peek_height,
    receipt,
)
from ledger.cutter import TimeToCut
from ledger.execution import LedgerMachine
from ledger.finality import QuorumCertificate
from ledger.results import ResultCode
from ledger.snapshot import SnapshotMeta
from ledger.votes import sign_vote
from schemas.codec import encode
from tests.unit.chain_helpers import CHAIN, Driver, consortium, key


class Logs:
    """The four ledger logs of a chain driven in memory (two copies of each block/receipt)."""

    def __init__(self, n: int = 4) -> None:
        self.plan = consortium(n)
        self.driver = Driver(self.plan)
        self.tx: list[tuple[int, int, bytes]] = []
        self.votes: list[bytes] = []
        self.blocks: list[bytes] = []
        self.receipts: list[bytes] = []
        self.executed: list[Any] = []

    def block(self, count: int = 5, tag: str = "d") -> None:
        d = self.driver
        gov = d.gov("inst-0")
        start = d.offset
        h = d.cutter.pending_height
        raws = [
            d.tx(
                gov,
                "AnchorData",
                {"data_id": f"{tag}-{h}-{i}", "sha256": bytes(32), "metadata": "{}"},
            )
            for i in range(count)
        ]
        executed = d.block(raws)
        self.executed.append(executed)
        for i, raw in enumerate(raws):
            self.tx.append((start + i, 1000 + start + i, raw))
        marker = TimeToCut(chain_id=CHAIN, height=h, producer=b"x").encode()
        self.tx.append((start + len(raws), 1000 + start + len(raws), marker))
        votes = [
            sign_vote(ops[0], height=h, block_hash=executed.block_hash)
            for _, (_, ops) in sorted(self.plan.keys.items())
        ]
        self.votes += [v.encode() for v in votes]
        quorum = executed.validator_set.quorum
        cert = QuorumCertificate(
            height=h, block_hash=executed.block_hash, votes=tuple(votes[:quorum])
        )
        raw = encode_finalized(executed.header, cert.record(), executed.results)
        self.blocks += [raw, raw]
        for _ in range(2):
            self.receipts += [
                receipt(r, height=h, block_hash=executed.block_hash) for r in executed.results
            ]

    def audit(
        self, *, feed_tx: Callable[[ChainAudit], None] | None = None, **kw: Any
    ) -> ChainAudit:
        """The logs through an audit (``kw``); ``feed_tx`` replaces feeding the tx log in
        order (the signature pipeline's tests feed it through worker processes)."""
        a = ChainAudit(self.plan.genesis, **kw)
        for offset, raw in enumerate(self.blocks):
            a.add_block_copy(offset, raw)
        for offset, raw in enumerate(self.votes):
            a.add_vote(offset, raw)
        if feed_tx is not None:
            feed_tx(a)
        else:
            for offset, ts, raw in self.tx:
                a.feed_tx(offset, ts, raw)
        for offset, raw in enumerate(self.receipts):
            a.feed_receipt(offset, raw)
        a.finish()
        return a


def errors(a: ChainAudit) -> list[Finding]:
    return [f for f in a.findings.items if f.severity == ERROR]


def kinds(a: ChainAudit, severity: str = ERROR) -> list[str]:
    return [f.kind for f in a.findings.items if f.severity == severity]


def chain(blocks: int = 3) -> Logs:
    logs = Logs()
    for _ in range(blocks):
        logs.block()
    return logs


def test_untouched_chain_audits_clean() -> None:
    a = chain().audit()
    assert errors(a) == []
    assert kinds(a, WARNING) == []
    assert a.audited_height == a.height == 3
    assert a.codes == {"OK": 15}
    assert [m.members for m in a.membership] == [("inst-0", "inst-1", "inst-2", "inst-3")]
    assert a.membership[0].quorum == 3


def test_forged_copy_is_reported_with_the_differing_fields() -> None:
    logs = chain()
    ex = logs.executed[1]
    forged_header = replace(ex.header, state_root=bytes(32))
    good = logs.blocks[2]  # first copy of height 2
    _, cert, results = decode_finalized(good)
    logs.blocks.append(encode_finalized(forged_header, cert, results))
    a = logs.audit()
    [finding] = errors(a)
    assert finding.kind == "block.forged"
    assert finding.height == 2 and finding.offset == len(logs.blocks) - 1
    assert "certificate" in finding.message
    assert set(finding.details["differs_from_replay"]) == {"state_root"}
    assert a.audited_height == 3


def test_garbage_and_blocks_beyond_the_log_are_errors() -> None:
    logs = chain()
    header, cert, results = decode_finalized(logs.blocks[0])
    logs.blocks += [b"garbage", encode_finalized(replace(header, height=9), cert, results)]
    a = logs.audit()
    assert sorted(kinds(a)) == ["block.beyond_log", "block.malformed"]
    beyond = next(f for f in a.findings.items if f.kind == "block.beyond_log")
    assert beyond.height == 9 and beyond.offset == len(logs.blocks) - 1


def test_missing_block_is_a_gap() -> None:
    logs = chain()
    logs.blocks = [b for i, b in enumerate(logs.blocks) if i not in (2, 3)]  # height 2
    a = logs.audit()
    assert kinds(a) == ["block.missing"]
    assert a.findings.items[0].height == 2


def test_rewritten_tx_log_contradicts_the_certified_blocks() -> None:
    logs = chain()
    offset, ts, raw = logs.tx[7]  # an envelope of block 2
    logs.tx[7] = (offset, ts, raw[:-1] + bytes([raw[-1] ^ 1]))  # its signature
    a = logs.audit()
    found = set(kinds(a))
    assert "block.mismatch" in found and "votes.quorum_on_other_hash" in found
    mismatch = next(f for f in a.findings.items if f.kind == "block.mismatch")
    assert mismatch.height == 2 and {"tx_root", "state_root"} <= set(mismatch.details)
    assert a.codes["BAD_SIGNATURE"] == 1


def test_receipts_mismatch_and_missing() -> None:
    logs = chain()
    ex = logs.executed[0]
    lying = receipt(
        replace(ex.results[0], code=ResultCode.BAD_NONCE), height=1, block_hash=ex.block_hash
    )
    logs.receipts = [
        r
        for r in logs.receipts
        if b"" == b"" and r not in (receipt(ex.results[1], height=1, block_hash=ex.block_hash),)
    ] + [lying]
    a = logs.audit()
    assert sorted(kinds(a)) == ["receipt.mismatch", "receipt.missing"]
    missing = next(f for f in a.findings.items if f.kind == "receipt.missing")
    assert missing.details["tx_offset"] == ex.results[1].offset
    mismatch = next(f for f in a.findings.items if f.kind == "receipt.mismatch")
    assert mismatch.details["receipt"]["result_code"] == int(ResultCode.BAD_NONCE)


def test_forged_receipts_are_errors_whatever_height_they_claim() -> None:
    """Issue 17's forged receipt (far height, random hash, FORBIDDEN) is an error, not
    ``receipt.pending``; a receipt beyond the replay for an unknown tx stays pending."""
    logs = chain()
    ex = logs.executed[1]
    target = ex.results[2]
    far = EntryResult(tx_id=target.tx_id, offset=target.offset, code=ResultCode.FORBIDDEN)
    at_far_offset = EntryResult(tx_id=target.tx_id, offset=10_000, code=ResultCode.FORBIDDEN)
    replay_of_it = EntryResult(tx_id=target.tx_id, offset=10_001, code=ResultCode.BAD_NONCE)
    unknown = EntryResult(tx_id=b"\x07" * 32, offset=10_002, code=ResultCode.OK)
    not_in_block = EntryResult(tx_id=b"\x08" * 32, offset=target.offset, code=ResultCode.OK)
    logs.receipts += [
        receipt(far, height=1_000_000, block_hash=b"\x99" * 32),
        receipt(at_far_offset, height=1_000_000, block_hash=b"\x99" * 32),
        receipt(replay_of_it, height=1_000_001, block_hash=b"\x99" * 32),
        receipt(unknown, height=1_000_002, block_hash=b"\x99" * 32),
        receipt(not_in_block, height=2, block_hash=ex.block_hash),
    ]
    a = logs.audit()
    mismatches = [f for f in a.findings.items if f.kind == "receipt.mismatch"]
    assert kinds(a) == ["receipt.mismatch"] * 3
    assert [f.height for f in mismatches] == [1_000_000, 1_000_000, 2]
    assert "contradicts the outcome of its tx (block 2, OK)" in mismatches[0].message
    assert mismatches[1].details["replayed"]["offset"] == target.offset
    assert mismatches[0].details["replayed"]["result_code"] == int(ResultCode.OK)
    pending = [f for f in a.findings.items if f.kind == "receipt.pending"]
    assert len(pending) == 1 and pending[0].severity == INFO
    assert pending[0].message.startswith("2 receipt(s)")


def test_impostor_and_non_member_votes_are_reported() -> None:
    logs = chain()
    member = logs.plan.keys["inst-2"][1][0]
    outsider = key("outsider-operator")
    ex = logs.executed[1]
    honest = sign_vote(member, height=2, block_hash=ex.block_hash)
    forged_by = sign_vote(outsider, height=2, block_hash=ex.block_hash)
    impostor = replace(honest, signature=forged_by.signature)  # the member's id, a bad signature
    logs.votes += [impostor.encode(), forged_by.encode()]
    a = logs.audit()
    assert kinds(a) == ["vote.impostor"]
    assert kinds(a, WARNING) == ["vote.non_member"]
    found = {f.kind: f for f in a.findings.items}
    assert found["vote.impostor"].height == 2
    assert found["vote.impostor"].offset == len(logs.votes) - 2
    assert found["vote.impostor"].details["institution"] == "inst-2"
    assert found["vote.non_member"].details["operator_key_id"] == outsider.key_id
    assert found["vote.non_member"].details["signature_valid"] is True
    assert a.audited_height == 3  # neither is counted towards finality


def test_equivocation_is_a_warning_not_a_failure() -> None:
    logs = chain()
    op = logs.plan.keys["inst-3"][1][0]
    logs.votes.append(sign_vote(op, height=2, block_hash=bytes(32)).encode())
    a = logs.audit()
    assert errors(a) == []
    assert kinds(a, WARNING) == ["vote.equivocation"]


def test_at_height_stops_the_replay_there() -> None:
    logs = chain(4)
    a = logs.audit(stop_height=2)
    assert a.height == 2 and a.done and errors(a) == []
    assert a.machine.last_hash == logs.executed[1].block_hash


def test_trusted_checkpoint_replays_only_what_follows() -> None:
    logs = chain(3)
    machine = LedgerMachine(logs.plan.genesis)
    machine.commit(logs.executed[0])
    meta = SnapshotMeta(
        chain_id=CHAIN,
        height=1,
        block_hash=machine.last_hash,
        state_root=machine.state.root,
        tx_offset=logs.executed[1].header.first_offset,
        votes_offset=0,
    )
    a = logs.audit(checkpoint=(machine.state, meta))
    assert errors(a) == [] and a.audited_height == 3
    assert a.counts["blocks"] == 2 and sum(a.codes.values()) == 10


_ENTRIES = st.lists(
    st.tuples(  # tx id, offset, result code of an EntryResult
        st.binary(min_size=32, max_size=32),
        st.one_of(st.integers(0, 1 << 20), st.integers(0, (1 << 63) - 1)),
        st.sampled_from(list(ResultCode)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    height=st.one_of(st.integers(0, 300), st.integers(0, (1 << 63) - 1)),
    block_hash=st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40)),
    entries=_ENTRIES,
)
def test_block_receipts_are_the_receipts(
    height: int, block_hash: bytes, entries: list[tuple[bytes, int, ResultCode]]
) -> None:
    """The audit's fast receipt bytes equal ledger.blocks.receipt, byte for byte."""
    results = [EntryResult(tx_id=t, offset=o, code=c) for t, o, c in entries]
    assert block_receipts(results, height=height, block_hash=block_hash) == [
        receipt(r, height=height, block_hash=block_hash) for r in results
    ]


@settings(max_examples=200, deadline=None)
@given(entries=_ENTRIES)
def test_finalized_blocks_are_the_codec_encoding(
    entries: list[tuple[bytes, int, ResultCode]],
) -> None:
    """encode_finalized's directly written results equal the codec's encoding of the block."""
    header, cert, _ = decode_finalized(chain(1).blocks[0])
    results = [EntryResult(tx_id=t, offset=o, code=c) for t, o, c in entries]
    record = {
        "header": header.record(),
        "certificate": cert,
        "results": [r.record() for r in results],
    }
    assert encode_finalized(header, cert, results) == encode("FinalizedBlock", record)


@settings(max_examples=200, deadline=None)
@given(height=st.one_of(st.integers(1, 300), st.integers(1, (1 << 63) - 1)), junk=st.binary())
def test_peek_height_reads_the_header_height_and_nothing_else(height: int, junk: bytes) -> None:
    """The projector groups block copies by this peek: it must name the encoded height, and
    give None (never raise) on bytes that are not a FinalizedBlock message."""
    header, cert, results = decode_finalized(chain(1).blocks[0])
    raw = encode_finalized(replace(header, height=height), cert, results)
    assert peek_height(raw) == height
    assert peek_height(junk) is None
    assert peek_height(raw[:11]) is None or raw[10] < 0x80
    assert peek_height(raw[:10]) is None
