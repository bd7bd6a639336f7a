"""CPU cost of the validator's pure core per transaction, without Kafka.

Four validators of a 4-institution chain each take the same stream of pre-signed
``AnchorData`` transactions (blocks of 500) and each other's votes, in one process, through
:class:`ledger.validator_core.ValidatorCore`: cutting, execution with signature checks,
voting, finality, final block and receipt encoding. Prints CPU microseconds per transaction
per validator beside one Ed25519 verification, so the share of the work that is not
signature verification is visible (the consensus benchmark's ceiling assumes it is zero).
Blocks verify their signatures as one batch (decisions D34): the single and the batch cost
of the verifier in use are both printed.

With ``--operators 2`` each institution runs two operators: the primary (rank 0) verifies
every signature and sends what it executed to its standby, which applies the final blocks
from that (D38, D52); their costs are printed apart.

With ``--reference-codec`` every record is encoded and decoded by the reference path
(fastavro behind the wire check) instead of the compiled one (D51): same answers, the cost
before D51 but for the final block's results, which are written directly either way.

    python -m bench.validator_core [--txs 5000] [--operators 2] [--reference-codec]
"""

from __future__ import annotations

import argparse
import hashlib
import time

from ledger import signatures
from ledger.execution import LedgerMachine
from ledger.genesis import genesis_state, plan_consortium
from ledger.keys import TX_DOMAIN, verify, verify_batch
from ledger.publication import PublishFinal
from ledger.tx import sign_tx
from ledger.validator_core import Action, SendFeed, SendVote, ValidatorCore
from schemas import codec


def seed(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def verify_cost(n: int = 3000) -> float:
    """CPU seconds of one Ed25519 verification."""
    plan_key = plan_consortium("x", ["a"], [seed("a/g"), seed("a/o")]).keys["a"][0]
    message = b"x" * 200
    signature = plan_key.sign(TX_DOMAIN, message)
    began = time.process_time()
    for _ in range(n):
        verify(plan_key.public_key, signature, TX_DOMAIN, message)
    return (time.process_time() - began) / n


def batch_verify_cost(batch: int = 500, rounds: int = 6) -> float:
    """CPU seconds per signature of :func:`ledger.keys.verify_batch` on a block-sized batch
    from four senders (as in the bench's blocks)."""
    plan = plan_consortium("x", ["a", "b", "c", "d"], [seed(f"{i}") for i in range(8)])
    senders = [plan.keys[i][0] for i in ("a", "b", "c", "d")]
    items = []
    for n in range(batch):
        message = n.to_bytes(4, "big") * 50
        key = senders[n % 4]
        items.append((key.public_key, key.sign(TX_DOMAIN, message), message))
    began = time.process_time()
    for _ in range(rounds):
        assert all(verify_batch(items, domain=TX_DOMAIN))
    return (time.process_time() - began) / (rounds * batch)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--txs", type=int, default=5000)
    parser.add_argument("--operators", type=int, default=1, help="operators per institution")
    parser.add_argument(
        "--reference-codec",
        action="store_true",
        help="encode and decode with fastavro and the wire check only (before D51)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    codec.use_fast_paths(not args.reference_codec)
    ids = [f"org-{i}" for i in range(4)]
    roles = ["g", *(f"o{k}" for k in range(args.operators))]
    plan = plan_consortium(
        "bench",
        ids,
        [seed(f"{i}/{r}") for i in ids for r in roles],
        operators_per_institution=args.operators,
        max_block_txs=500,
    )
    cores = [
        ValidatorCore(
            machine=LedgerMachine(plan.genesis),
            final_state=genesis_state(plan.genesis),
            operator=op,
        )
        for i in ids
        for op in plan.keys[i][1]
    ]
    txs = [
        sign_tx(
            plan.keys[ids[i % 4]][0],
            chain_id="bench",
            nonce=i // 4,
            operation="AnchorData",
            args={"data_id": f"d-{i}", "sha256": bytes(32), "metadata": "bench"},
        )
        for i in range(args.txs)
    ]
    votes: list[bytes] = []
    feeds: list[tuple[bytes, bytes]] = []  # (sender key id, feed), D52
    spent = [0.0] * len(cores)
    receipts = 0

    def carry(core: ValidatorCore, actions: list[Action]) -> None:
        nonlocal receipts
        for action in actions:
            if isinstance(action, PublishFinal):
                receipts += len(action.receipts)
            elif isinstance(action, SendVote):
                votes.append(action.raw)
            elif isinstance(action, SendFeed):
                feeds.append((core.operator.key_id, action.raw))

    for offset, raw in enumerate(txs):
        for n, core in enumerate(cores):
            began = time.process_time()
            actions = core.on_tx(offset, 0, raw)
            spent[n] += time.process_time() - began
            carry(core, actions)
        while votes or feeds:  # feeds first (sent before the votes), then the votes
            now_feeds, now_votes = list(feeds), list(votes)
            feeds.clear()
            votes.clear()
            for n, core in enumerate(cores):
                began = time.process_time()
                done: list[Action] = []
                for sender, feed in now_feeds:
                    done += core.on_feed(sender, feed)
                for vote_offset, vote in enumerate(now_votes):
                    done += core.on_vote(vote_offset, vote)
                spent[n] += time.process_time() - began
                carry(core, done)
    final = min(core.final_height for core in cores)
    one_verify = verify_cost()
    batched = batch_verify_cost()
    for rank in sorted({core.rank for core in cores}):
        mine = [spent[n] for n, core in enumerate(cores) if core.rank == rank]
        per_tx = sum(mine) / len(mine) / (final * 500)
        who = "per validator  " if args.operators == 1 else f"rank {rank} operator"
        print(
            f"validator core, CPU per tx {who}  {per_tx * 1e6:8.1f} us "
            f"({final} blocks of 500 final on {len(cores)} validators, {receipts:,} receipts)"
        )
        if rank == 0:  # a following standby verifies (almost) nothing
            print(f"  core per tx / one single verify          {per_tx / one_verify:8.2f} x")
            share = 100 * batched / per_tx
            print(f"  share of that work that is verify        {share:8.0f} % (batched)")
    backend = signatures.BACKEND
    print(f"Ed25519 verify, CPU per signature          {one_verify * 1e6:8.1f} us ({backend})")
    print(f"Ed25519 batch verify (500), CPU per sig    {batched * 1e6:8.1f} us")


if __name__ == "__main__":
    main()
