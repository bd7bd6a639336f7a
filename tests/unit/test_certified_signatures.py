"""A reader that re-executes a certified block may take its quorum's word for signatures."""

from __future__ import annotations

import hashlib

from ledger.cutter import Cutter, TimeToCut
from ledger.execution import LedgerMachine
from ledger.finality import certified_signatures
from ledger.genesis import plan_consortium
from ledger.results import ResultCode
from ledger.tx import sign_tx

IDS = ["org-a", "org-b", "org-c", "org-d"]


def _seed(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def test_only_entries_that_passed_the_signature_check_are_vouched_for() -> None:
    plan = plan_consortium("c", IDS, [_seed(f"{i}/{r}") for i in IDS for r in ("g", "o")])
    key = plan.keys["org-a"][0]
    args = {"sha256": bytes(32), "metadata": "m"}
    good = sign_tx(
        key, chain_id="c", nonce=0, operation="AnchorData", args={**args, "data_id": "ok"}
    )
    replay = sign_tx(
        key, chain_id="c", nonce=0, operation="AnchorData", args={**args, "data_id": "again"}
    )
    forged = bytearray(
        sign_tx(
            key, chain_id="c", nonce=1, operation="AnchorData", args={**args, "data_id": "forged"}
        )
    )
    forged[-1] ^= 1
    malformed = b"\xc3\x01garbage"
    cutter = Cutter(chain_id="c", next_height=1, max_block_txs=100, max_block_bytes=1 << 20)
    for offset, raw in enumerate([good, replay, bytes(forged), malformed]):
        assert cutter.feed(offset, 0, raw) is None
    block = cutter.feed(4, 0, TimeToCut(chain_id="c", height=1, producer=b"").encode())
    assert block is not None
    honest = LedgerMachine(plan.genesis).execute(block)
    codes = [r.code for r in honest.results]
    assert codes == [
        ResultCode.OK,
        ResultCode.BAD_NONCE,
        ResultCode.BAD_SIGNATURE,
        ResultCode.MALFORMED,
    ]

    raws = [e.raw for e in block.entries]
    vouched = certified_signatures(raws, honest.results)
    assert vouched == {good, replay}
    reader = LedgerMachine(plan.genesis).execute(block, verified_signatures=vouched)
    assert reader.header == honest.header
    assert reader.results == honest.results
    assert certified_signatures(raws[:-1], honest.results) == frozenset()


def test_a_wrongly_vouched_signature_changes_the_hash() -> None:
    """Why the reader still compares hashes: vouching for a forged envelope (a lying
    certificate's results) cannot make the reader agree with an honest block."""
    plan = plan_consortium("c", IDS, [_seed(f"{i}/{r}") for i in IDS for r in ("g", "o")])
    key = plan.keys["org-a"][0]
    args = {"data_id": "f", "sha256": bytes(32), "metadata": "m"}
    forged = bytearray(sign_tx(key, chain_id="c", nonce=0, operation="AnchorData", args=args))
    forged[-1] ^= 1
    cutter = Cutter(chain_id="c", next_height=1, max_block_txs=1, max_block_bytes=1 << 20)
    block = cutter.feed(0, 0, bytes(forged))
    assert block is not None
    honest = LedgerMachine(plan.genesis).execute(block)
    fooled = LedgerMachine(plan.genesis).execute(block, verified_signatures={bytes(forged)})
    assert honest.results[0].code is ResultCode.BAD_SIGNATURE
    assert fooled.results[0].code is ResultCode.OK
    assert fooled.block_hash != honest.block_hash
