"""Benchmarks of the pure core; prints figures, asserts nothing about time.

Run with ``python -m bench.core``. Figures: canonical encode+decode per second, transaction
verification per second, the Merkle root of 100k leaves, and block execution throughput with
signature checks.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from ledger.cutter import Cutter, TimeToCut
from ledger.execution import LedgerMachine
from ledger.genesis import plan_consortium
from ledger.keys import KeyPair
from ledger.merkle import root
from ledger.tx import parse_tx, sign_tx
from schemas.codec import decode, encode


def seed(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def rate(label: str, count: int, fn: Callable[[], None]) -> None:
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    print(f"{label:<44} {count / elapsed:>12,.0f} /s   ({count:,} in {elapsed:.3f} s)")


def main() -> None:
    signer = KeyPair.from_seed(seed("bench"))
    args = {"data_id": "sensor-42/2026-01-01", "sha256": bytes(32), "metadata": '{"k":"v"}'}
    raw = sign_tx(signer, chain_id="bench", nonce=0, operation="AnchorData", args=args)
    _, envelope = decode(raw)

    n = 20_000

    def codec_loop() -> None:
        for _ in range(n):
            decode(encode("TxEnvelope", envelope))

    rate("canonical encode+decode (TxEnvelope)", n, codec_loop)

    def verify_loop() -> None:
        for _ in range(n // 4):
            parse_tx(raw)

    rate("tx verify (decode + Ed25519 verify)", n // 4, verify_loop)

    leaves = [i.to_bytes(8, "big") * 4 for i in range(100_000)]
    start = time.perf_counter()
    digest = root(leaves)
    print(
        f"{'Merkle root of 100k leaves':<44} {time.perf_counter() - start:>12.3f} s    "
        f"({digest.hex()[:16]}...)"
    )

    ids = [f"org-{i}" for i in range(4)]
    plan = plan_consortium(
        "bench", ids, [seed(f"{i}/{r}") for i in ids for r in ("g", "o")], max_block_txs=1000
    )
    machine = LedgerMachine(plan.genesis)
    cutter = Cutter(chain_id="bench", next_height=1, max_block_txs=1000, max_block_bytes=1 << 30)
    blocks = []
    offset = 0
    txs = 0
    for b in range(5):
        for i in range(1000):
            inst = ids[i % 4]
            gov = plan.keys[inst][0]
            nonce = b * 250 + i // 4
            tx = sign_tx(
                gov,
                chain_id="bench",
                nonce=nonce,
                operation="AnchorData",
                args={**args, "data_id": f"d-{b}-{i}"},
            )
            block = cutter.feed(offset, offset, tx)
            offset += 1
            txs += 1
            if block is not None:
                blocks.append(block)
    tail = cutter.feed(
        offset,
        offset,
        TimeToCut(chain_id="bench", height=cutter.pending_height, producer=b"").encode(),
    )
    if tail is not None:
        blocks.append(tail)

    def execute_loop() -> None:
        for block in blocks:
            executed = machine.apply(block)
            assert all(r.code == 0 for r in executed.results)

    rate("block execution with signature checks (tx)", txs, execute_loop)


if __name__ == "__main__":
    main()
