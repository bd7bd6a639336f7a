"""Support for the projection tests and bench: an in-process chain on the real broker.

:class:`SimChain` stands in for the validators: it reads ``<prefix>tx`` with its own consumer,
cuts and executes blocks with the pure core, signs a quorum of votes with the operators'
keys and publishes every FinalizedBlock and its receipts ``copies`` times, as the validators
do. It is much faster to start than validator processes and lets tests inject bad messages.
The projected tables are compared with :func:`expected_rows`, computed from an independent
replay of the tx log through the core (``harness.consortium.replay_log``).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from harness.consortium import Replay, read_partition, replay_log
from ledger.blocks import encode_finalized, receipt
from ledger.cutter import Cutter, TimeToCut
from ledger.execution import LedgerMachine
from ledger.finality import QuorumCertificate
from ledger.genesis import ConsortiumPlan, plan_consortium
from ledger.key_proofs import add_operator_args, propose_member_args, register_identity_args
from ledger.keys import KeyPair
from ledger.tx import parse_tx, sign_tx
from ledger.votes import sign_vote
from runtime.delivery import close_producer
from runtime.kafka_config import admin_config, consume_ready, consumer_config, producer_config
from runtime.topics import ensure_topics

CHAIN_ID = "proj-test"
TABLES = {
    "blocks": "height",
    "block_votes": "height, position",
    "transactions": "height, position",
    "state_records": "key",
    "institutions": "institution_id",
    "keys": "key_id",
    "proposals": "proposal_id",
    "proposal_votes": "proposal_id, institution_id",
    "anchors": "data_id",
    "assets": "asset_id",
    "asset_owners": "asset_id, height, position",
    "l2_batches": "batch_id",
    "evidence": "operator_key_id, height",
    "meta": "singleton",
    "pending_blocks": "source_offset",
}


class SimChain:
    """Validators in one object: finalize the tx log and publish blocks and receipts."""

    def __init__(
        self,
        bootstrap: str,
        prefix: str,
        workdir: Path,
        *,
        n: int = 4,
        copies: int = 2,
        **params: int,
    ) -> None:
        self.bootstrap, self.prefix, self.copies = bootstrap, prefix, copies
        institutions = [f"inst-{i}" for i in range(1, n + 1)]
        seeds = [os.urandom(32) for _ in range(2 * n)]
        self.plan: ConsortiumPlan = plan_consortium(CHAIN_ID, institutions, seeds, **params)
        self.genesis = self.plan.genesis
        workdir.mkdir(parents=True, exist_ok=True)
        self.genesis_path = workdir / "genesis.avro"
        self.genesis_path.write_bytes(self.genesis.encode())
        ensure_topics(AdminClient(admin_config(bootstrap)), prefix=prefix)
        self.producer = Producer(producer_config(bootstrap, **{"linger.ms": 5}))
        self.consumer = Consumer(consumer_config(bootstrap, f"sim-{os.urandom(4).hex()}"))
        self.consumer.assign([TopicPartition(self.topic("tx"), 0, 0)])
        params_ = self.genesis.params
        self.cutter = Cutter(
            chain_id=params_.chain_id,
            next_height=1,
            max_block_txs=params_.max_block_txs,
            max_block_bytes=params_.max_block_bytes,
        )
        self.machine = LedgerMachine(self.genesis)
        self.read_upto = -1
        self.nonces: dict[bytes, int] = {}
        self.forge_every = 0
        #: operator keys added on chain after the genesis (AddOperator), to vote with
        self.extra_operators: dict[bytes, KeyPair] = {}

    def topic(self, suffix: str) -> str:
        """Full topic name."""
        return f"{self.prefix}{suffix}"

    def gov(self, inst: str) -> KeyPair:
        """An institution's governance key."""
        return self.plan.keys[inst][0]

    def tx(
        self, signer: KeyPair, operation: str, args: Mapping[str, Any], nonce: int | None = None
    ) -> bytes:
        """A signed envelope with the signer's next nonce."""
        if nonce is None:
            nonce = self.nonces.get(signer.key_id, 0)
            self.nonces[signer.key_id] = nonce + 1
        return sign_tx(signer, chain_id=CHAIN_ID, nonce=nonce, operation=operation, args=args)

    def send(self, raws: Sequence[bytes], topic: str = "tx") -> None:
        """Produce values to a topic and wait for them."""
        for raw in raws:
            while True:
                try:
                    self.producer.produce(self.topic(topic), key=b"sim", value=raw)
                    break
                except BufferError:
                    self.producer.poll(0.05)
        assert self.producer.flush(30) == 0

    def finalize(self) -> int:
        """Read the tx log to its end (cutting a partial block with a marker) and publish
        every block it completes; returns the final height."""
        for _ in range(2):
            _, high = self.consumer.get_watermark_offsets(
                TopicPartition(self.topic("tx"), 0), timeout=10, cached=False
            )
            while self.read_upto < high - 1:
                for msg in consume_ready(self.consumer, 1000, 1.0):
                    if msg.error() is not None:
                        continue
                    offset = msg.offset()
                    assert offset is not None
                    self.read_upto = offset
                    block = self.cutter.feed(offset, msg.timestamp()[1], msg.value() or b"")
                    if block is not None:
                        self._publish(self.machine.apply(block))
            if not self.cutter.pending_count:
                break
            marker = TimeToCut(
                chain_id=CHAIN_ID, height=self.cutter.pending_height, producer=bytes(32)
            )
            self.send([marker.encode()])
        assert self.producer.flush(30) == 0
        return self.machine.height

    def _publish(self, executed: Any) -> None:
        validators = executed.validator_set
        ops = {op.key_id: op for _, (_, o) in self.plan.keys.items() for op in o}
        ops.update(self.extra_operators)
        voters = [
            ops[next(k for k in sorted(validators.members[i]) if k in ops)]
            for i in sorted(validators.members)
        ][: validators.quorum]
        votes = tuple(
            sign_vote(k, height=executed.header.height, block_hash=executed.block_hash)
            for k in voters
        )
        cert = QuorumCertificate(
            height=executed.header.height, block_hash=executed.block_hash, votes=votes
        )
        raw = encode_finalized(executed.header, cert.record(), executed.results)
        if self.forge_every and executed.header.height % self.forge_every == 0:
            at = raw.find(votes[0].signature)
            forged = raw[:at] + bytes([raw[at] ^ 1]) + raw[at + 1 :]
            self.producer.produce(self.topic("blocks"), value=forged)
        for _ in range(self.copies):
            self.producer.produce(
                self.topic("blocks"), key=str(executed.header.height).encode(), value=raw
            )
            for r in executed.results:
                value = receipt(r, height=executed.header.height, block_hash=executed.block_hash)
                self.producer.produce(self.topic("receipts"), key=r.tx_id, value=value)
            self.producer.poll(0)

    def replay(self) -> Replay:
        """Independent oracle: the whole tx log through the core."""
        return replay_log(self.genesis, read_partition(self.bootstrap, self.topic("tx")))

    def close(self) -> None:
        """Close the Kafka clients."""
        close_producer(self.producer, 10)
        self.consumer.close()


def projector_argv(
    genesis: Path, bootstrap: str, prefix: str, server: str, dbname: str, *extra: str
) -> list[str]:
    """The command line of an inst-1 projector process (``server``: a DSN without password)."""
    return [
        sys.executable,
        "-m",
        "projections.projector",
        "--institution",
        "inst-1",
        "--genesis",
        str(genesis),
        "--bootstrap",
        bootstrap,
        "--prefix",
        prefix,
        "--dsn",
        server,
        "--dbname",
        dbname,
        *extra,
    ]


def anchor(sim: SimChain, signer: KeyPair, data_id: str) -> bytes:
    """An AnchorData envelope."""
    digest = hashlib.sha256(data_id.encode()).digest()
    return sim.tx(signer, "AnchorData", {"data_id": data_id, "sha256": digest, "metadata": "{}"})


def dump(conn: psycopg.Connection[Any], table: str) -> list[tuple[Any, ...]]:
    """Every row of ``chain.<table>`` in primary-key order."""
    order = TABLES[table]
    return conn.execute(f"SELECT * FROM chain.{table} ORDER BY {order}").fetchall()


def dump_all(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every chain table, row for row."""
    with psycopg.connect(dsn) as conn:
        return {t: dump(conn, t) for t in TABLES}


def expected_rows(replay: Replay) -> dict[str, set[tuple[Any, ...]]]:
    """What the core says the main tables must hold (independent of projections.rows)."""
    out: dict[str, set[tuple[Any, ...]]] = {"blocks": set(), "transactions": set()}
    for b in replay.blocks:
        h = b.header
        out["blocks"].add((h.height, b.block_hash, h.prev_hash, h.state_root, len(b.results)))
        for i, r in enumerate(b.results):
            out["transactions"].add((h.height, i, r.tx_id, r.offset, int(r.code)))
    fields = {
        "inst": ("institutions", ("institution_id", "status", "effective_height")),
        "key": ("keys", ("key_id", "role", "institution_id", "active", "next_nonce")),
        "prop": ("proposals", ("proposal_id", "status", "yes", "no")),
        "anchor": ("anchors", ("data_id", "sha256", "institution_id", "height")),
        "asset": ("assets", ("asset_id", "owner_key_id")),
        "batch": ("l2_batches", ("batch_id", "merkle_root", "leaf_count")),
    }
    for table, _ in fields.values():
        out[table] = set()
    for key, record in replay.machine.state.items():
        prefix = key.split("/", 1)[0]
        if prefix in fields:
            table, cols = fields[prefix]
            out[table].add(tuple(_norm(record[c]) for c in cols))
    return out


def projected_rows(dsn: str) -> dict[str, set[tuple[Any, ...]]]:
    """The same columns as :func:`expected_rows`, from the database."""
    queries = {
        "blocks": "SELECT height, hash, prev_hash, state_root, tx_count FROM chain.blocks",
        "transactions": "SELECT height, position, tx_id, tx_offset, result_code "
        "FROM chain.transactions",
        "institutions": "SELECT institution_id, status, effective_height FROM chain.institutions",
        "keys": "SELECT key_id, role, institution_id, active, next_nonce FROM chain.keys",
        "proposals": "SELECT proposal_id, status, yes, no FROM chain.proposals",
        "anchors": "SELECT data_id, sha256, institution_id, height FROM chain.anchors",
        "assets": "SELECT asset_id, owner_key_id FROM chain.assets",
        "l2_batches": "SELECT batch_id, merkle_root, leaf_count FROM chain.l2_batches",
    }
    with psycopg.connect(dsn) as conn:
        return {
            t: {tuple(_norm(v) for v in row) for row in conn.execute(q).fetchall()}
            for t, q in queries.items()
        }


def _norm(value: Any) -> Any:
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, list):
        return tuple(_norm(v) for v in value)
    return value


def governance_workload(sim: SimChain) -> tuple[list[bytes], KeyPair]:
    """Transactions touching every chain table; returns them and a SERVICE key of inst-1."""
    g1, g2, g3 = sim.gov("inst-1"), sim.gov("inst-2"), sim.gov("inst-3")
    service, device, user, newcomer, newop, extra_op = (
        KeyPair.from_seed(os.urandom(32)) for _ in range(6)
    )
    raws = [
        sim.tx(
            g1,
            "RegisterIdentity",
            register_identity_args(
                service, chain_id=CHAIN_ID, institution_id="inst-1", kind="SERVICE", label="svc"
            ),
        ),
        sim.tx(
            g1,
            "RegisterIdentity",
            register_identity_args(
                device, chain_id=CHAIN_ID, institution_id="inst-1", kind="DEVICE", label="sensor-1"
            ),
        ),
        sim.tx(
            g2,
            "RegisterIdentity",
            register_identity_args(
                user, chain_id=CHAIN_ID, institution_id="inst-2", kind="USER", label="alice"
            ),
        ),
        sim.tx(
            g2,
            "AddOperator",
            add_operator_args(extra_op, chain_id=CHAIN_ID, institution_id="inst-2"),
        ),
        sim.tx(g1, "RegisterAsset", {"asset_id": "asset-1", "metadata": '{"k": 1}'}),
        sim.tx(g1, "TransferAsset", {"asset_id": "asset-1", "new_owner_key_id": g2.key_id}),
        sim.tx(g2, "TransferAsset", {"asset_id": "asset-1", "new_owner_key_id": device.key_id}),
        sim.tx(
            g1,
            "CommitBatch",
            {
                "batch_id": "b-1",
                "merkle_root": bytes(32),
                "leaf_count": 3,
                "window_start_ms": 1,
                "window_end_ms": 2,
            },
        ),
        sim.tx(
            g1,
            "ProposeMember",
            propose_member_args(newcomer, [newop], chain_id=CHAIN_ID, institution_id="newco"),
        ),
    ]
    proposal_id = parse_tx(raws[-1]).tx_id
    raws += [
        sim.tx(g2, "CastVote", {"proposal_id": proposal_id, "approve": True}),
        sim.tx(g3, "CastVote", {"proposal_id": proposal_id, "approve": False}),
        sim.tx(g1, "RevokeIdentity", {"key_id": device.key_id}),
        sim.tx(g1, "AnchorData", {"data_id": "bad", "sha256": b"short", "metadata": ""}),
        sim.tx(g1, "AnchorData", {"data_id": "x", "sha256": bytes(32), "metadata": ""}, nonce=999),
        b"\x00 not a transaction",
    ]
    return raws, service
