"""Shared fixtures for ledger unit tests: deterministic keys, a consortium, block driving."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from ledger.blocks import tx_proof
from ledger.cutter import CutBlock, Cutter, TimeToCut
from ledger.execution import ExecutedBlock, LedgerMachine
from ledger.finality import QuorumCertificate
from ledger.genesis import ConsortiumPlan, plan_consortium
from ledger.hashing import canonical_bytes
from ledger.keys import KeyPair
from ledger.members import key_key
from ledger.proofs import TxInclusion
from ledger.tx import sign_tx
from ledger.votes import sign_vote

CHAIN = "test-chain"


def seed(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def key(label: str) -> KeyPair:
    return KeyPair.from_seed(seed(label))


def consortium(n: int = 4, operators: int = 1, **params: int) -> ConsortiumPlan:
    ids = [f"inst-{i}" for i in range(n)]
    roles = ["gov", *[f"op{j}" for j in range(operators)]]
    seeds = [seed(f"{i}/{role}") for i in ids for role in roles]
    return plan_consortium(CHAIN, ids, seeds, operators_per_institution=operators, **params)


class Driver:
    """A ledger machine fed through a cutter, with nonces tracked per key."""

    def __init__(self, plan: ConsortiumPlan) -> None:
        self.plan = plan
        self.machine = LedgerMachine(plan.genesis)
        self.cutter = Cutter(
            chain_id=CHAIN, next_height=1, max_block_txs=10_000, max_block_bytes=1 << 30
        )
        self.offset = 0
        self.nonces: dict[bytes, int] = {}
        self.blocks: list[ExecutedBlock] = []

    def gov(self, inst: str) -> KeyPair:
        return self.plan.keys[inst][0]

    def tx(
        self, signer: KeyPair, operation: str, args: Mapping[str, Any], nonce: int | None = None
    ) -> bytes:
        if nonce is None:
            nonce = self.nonces.get(signer.key_id, 0)
            self.nonces[signer.key_id] = nonce + 1
        return sign_tx(signer, chain_id=CHAIN, nonce=nonce, operation=operation, args=args)

    def cut(self, raws: Sequence[bytes]) -> CutBlock:
        block = None
        for raw in raws:
            assert self.cutter.feed(self.offset, 1000 + self.offset, raw) is None
            self.offset += 1
        marker = TimeToCut(chain_id=CHAIN, height=self.cutter.pending_height, producer=b"x")
        block = self.cutter.feed(self.offset, 1000 + self.offset, marker.encode())
        self.offset += 1
        assert block is not None
        return block

    def block(self, raws: Sequence[bytes]) -> ExecutedBlock:
        executed = self.machine.apply(self.cut(raws))
        self.blocks.append(executed)
        for kid in self.nonces:  # rejected transactions did not consume their nonce
            record = self.machine.state.get(key_key(kid))
            self.nonces[kid] = record["next_nonce"] if record else 0
        return executed

    def codes(self, raws: Sequence[bytes]) -> list[str]:
        """Run one block; return result code names; resync nonces of rejected txs."""
        executed = self.block(raws)
        return [r.code.name for r in executed.results]


def certified_inclusion(
    plan: ConsortiumPlan, executed: ExecutedBlock, raws: Sequence[bytes], position: int
) -> TxInclusion:
    """The inclusion part of entry ``position`` of ``executed`` (block 1, whose envelopes are
    ``raws``), certified by three of the plan's operators -- built field by field, apart from
    :meth:`TxInclusion.assemble`, as the proof tests' oracle."""
    ops = [plan.keys[i][1][0] for i in sorted(plan.keys)]
    votes = tuple(sign_vote(op, height=1, block_hash=executed.block_hash) for op in ops[:3])
    cert = QuorumCertificate(height=1, block_hash=executed.block_hash, votes=votes)
    return TxInclusion(
        envelope=raws[position],
        tx_offset=executed.results[position].offset,
        tx_index=position,
        tx_count=len(executed.results),
        tx_path=tuple(tx_proof(executed.results, position)),
        header=executed.header,
        certificate=canonical_bytes("QuorumCertificate", cert.record()),
    )
