"""``projections.chain_rows``: a certified block's rows, built by column name."""

from __future__ import annotations

from ledger.finality import QuorumCertificate
from ledger.votes import sign_vote
from projections.chain_rows import block_rows
from projections.rows import APPEND_TABLES, BatchRows
from tests.unit.chain_helpers import Driver, consortium


def test_a_block_gives_its_votes_entries_and_owners_by_column() -> None:
    plan = consortium(4)
    driver = Driver(plan)
    gov = driver.gov("inst-1")
    raws = [driver.tx(gov, "RegisterAsset", {"asset_id": "a-1", "metadata": "m"})]
    cut = driver.cut(raws)
    executed = driver.machine.execute(cut)
    ops = [(inst, plan.keys[inst][1][0]) for inst in sorted(plan.keys)]
    votes = tuple(sign_vote(op, height=1, block_hash=executed.block_hash) for _, op in ops[:3])
    cert = QuorumCertificate(height=1, block_hash=executed.block_hash, votes=votes)
    rows = BatchRows()
    block_rows(rows, executed, cut, cert, 42, previous=driver.machine.state.get)  # not committed

    def named(table: str) -> list[dict[str, object]]:
        return [dict(zip(APPEND_TABLES[table], r, strict=True)) for r in rows.append[table]]

    [block] = named("blocks")
    assert (block["height"], block["source_offset"], block["tx_count"]) == (1, 42, 1)
    assert [(v["position"], v["institution_id"]) for v in named("block_votes")] == [
        (i, inst) for i, (inst, _) in enumerate(ops[:3])
    ]
    [entry] = named("transactions")
    assert (entry["operation"], entry["sender"], entry["envelope"]) == (
        "RegisterAsset",
        gov.key_id,
        raws[0],
    )
    [owner] = named("asset_owners")
    assert (owner["asset_id"], owner["owner_key_id"], owner["tx_id"]) == (
        "a-1",
        gov.key_id,
        entry["tx_id"],
    )
