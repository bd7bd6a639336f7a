"""The compiled execution path answers exactly as graphene does, on real chain data.

Every explorer query (``gateway/static/explorer.js``), shapes that exercise the batched
loads, and hostile or broken queries run twice through one :class:`Engine`: once on the
compiled plan and once on graphene (the same prepared operation without its plan); the
response bodies must be equal, and the explorer's queries must really take the compiled
path (no silent fallback).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from gateway.context import Services
from gateway.engine import Engine, encode
from gateway.errors import PageTooLarge
from gateway.limits import Limits
from harness.gateway_support import INSTITUTION, ChainFixture
from ledger.tx import parse_tx
from projections import read
from projections.read import queries

pytestmark = pytest.mark.integration

TX = "txId height position result sender operation"
EXPLORER = {
    "dashboard": (
        "{ summary { chainId height txCount okCount institutionCount recentTps } "
        "blocks(first: 15) { edges { node { height hash txCount okCount timestamp } } } "
        f"transactions(first: 15) {{ edges {{ node {{ {TX} }} }} }} }}"
    ),
    "block": (
        "query($h: Int, $x: String) { block(height: $h, hash: $x) { height hash prevHash "
        "stateRoot txRoot validatorSetHash timestamp txCount okCount firstOffset lastOffset "
        "certificate { votes { institutionId operatorKeyId signature } } "
        f"transactions(first: 100) {{ edges {{ node {{ {TX} nonce }} }} "
        "pageInfo { hasNextPage } } } }"
    ),
    "tx": (
        "query($i: String!) { transaction(id: $i) { txId height position offset result sender "
        "nonce operation receipt { code blockHash } senderIdentity { role institutionId label } } }"
    ),
    "address": (
        "query($k: String!) { identity(keyId: $k) { keyId publicKey role institutionId label "
        f"active nextNonce assets transactions(first: 50) {{ edges {{ node {{ {TX} }} }} }} }} "
        f"transactions(first: 50, sender: $k) {{ edges {{ node {{ {TX} }} }} }} }}"
    ),
    "institutions": (
        "{ institutions { id status effectiveHeight governanceKeyId "
        "operators { keyId label active } } }"
    ),
    "proposals": (
        "{ proposals(first: 50) { id kind institutionId proposer status createdHeight "
        "expiresHeight votes { institutionId approve height } } }"
    ),
    "search": (
        "query($q: String!) { block(hash: $q) { height } transaction(id: $q) { txId } "
        "identity(keyId: $q) { keyId } }"
    ),
    "devices": "query($i: String!) { devices(institution: $i, first: 20) { keyId label active } }",
}
# Nested lists whose per-object fields are batched (one statement per level).
NESTED = {
    "tx-lists": (
        "query($n: Int) { transactions(first: $n) { edges { cursor node { txId ok offset "
        "receipt { code ok height position blockHash } block { height hash timestamp "
        "timestampMs } senderIdentity { keyId role nextNonce assets } } } "
        "pageInfo { hasNextPage endCursor } } }"
    ),
    "block-lists": (
        "{ blocks(first: 6) { edges { cursor node { __typename height "
        "certificate { height blockHash encoded votes { position institutionId publicKey } } "
        "transactions(first: 3) { edges { node { txId block { height } } } "
        "pageInfo { hasNextPage endCursor } } } } } }"
    ),
    "identity-lists": (
        '{ identities(institution: "inst-1") { keyId assets transactions(first: 3) { edges { '
        "node { txId block { height } senderIdentity { keyId } } } pageInfo { hasNextPage } } } "
        "institutions { operators { keyId assets } } }"
    ),
    "tx-arguments": (
        "query($n: Int) { transactions(first: $n) { edges { node { txId operation arguments "
        "envelope resultCode } } } }"
    ),
    "block-leaves": (
        "{ blocks(first: 6) { edges { node { height leaves transactions(first: 3) { edges { "
        "node { txId arguments } } } } } } }"
    ),
    "key-set": "{ keySetTransactions(first: 50) { txId height position arguments envelope } }",
    "aliases": (
        "{ a: summary { h: height } b: blocks(first: 2) { edges { node { height } } } "
        "c: blocks(first: 3) { edges { node { height } } } }"
    ),
    "misc": (
        '{ anchor(dataId: "doc-3") { dataId sha256 height } anchors(institution: "inst-1", '
        'first: 3) { dataId } asset(assetId: "asset-1") { assetId history { height txId } } '
        'l2Batches { batchId } identities(institution: "inst-1") { keyId role } }'
    ),
}


@pytest.fixture(scope="module")
def engine(chain: ChainFixture) -> Engine:
    return Engine(Services(institution=INSTITUTION, pool=chain.pool), Limits())


@pytest.fixture(scope="module")
def sample(chain: ChainFixture) -> dict[str, Any]:
    with psycopg.connect(chain.dsn, autocommit=True) as conn:
        tx_id, sender = conn.execute(
            "SELECT tx_id, sender FROM chain.transactions WHERE sender IS NOT NULL "
            "ORDER BY height DESC LIMIT 1"
        ).fetchone() or (b"", b"")
        (block_hash,) = conn.execute(
            "SELECT hash FROM chain.blocks ORDER BY height LIMIT 1 OFFSET 2"
        ).fetchone() or (b"",)
    return {
        "tx": bytes(tx_id).hex(),
        "sender": bytes(sender).hex(),
        "hash": bytes(block_hash).hex(),
    }


def both(engine: Engine, chain: ChainFixture, query: str, **variables: Any) -> dict[str, Any]:
    """Run on the compiled plan and on graphene; assert equal bodies and return one."""
    claims = chain.tokens.verifier.verify(chain.tokens.token(("chain:read",)))
    prepared = engine.prepare(query, variables, None, claims)
    compiled = engine.run(prepared, claims)
    graphene = engine.run(dataclasses.replace(prepared, plan=None), claims)
    assert encode(compiled) == encode(graphene), query
    return compiled


def test_explorer_queries_take_the_compiled_path(
    engine: Engine, chain: ChainFixture, sample: dict[str, Any]
) -> None:
    variables: dict[str, list[dict[str, Any]]] = {
        "dashboard": [{}],
        "block": [{"h": 1}, {"h": chain.height}, {"x": sample["hash"]}, {"h": 10**6}],
        "tx": [{"i": sample["tx"]}, {"i": "00" * 32}],
        "address": [{"k": sample["sender"]}, {"k": "11" * 32}],
        "institutions": [{}],
        "proposals": [{}],
        "search": [{"q": sample["tx"]}, {"q": sample["hash"]}],
        "devices": [{"i": "inst-1"}, {"i": "nobody"}],
    }
    for name, query in EXPLORER.items():
        for v in variables[name]:
            runs, fallbacks = engine.compiled_runs, engine.fallbacks
            body = both(engine, chain, query, **v)
            assert "errors" not in body, (name, body)
            assert engine.fallbacks == fallbacks, name
            assert engine.compiled_runs == runs + 1, name
    dashboard = both(engine, chain, EXPLORER["dashboard"])["data"]
    assert dashboard["summary"]["height"] >= chain.height
    assert len(dashboard["transactions"]["edges"]) == 15
    tx = both(engine, chain, EXPLORER["tx"], i=sample["tx"])["data"]["transaction"]
    assert tx["senderIdentity"] is not None and tx["receipt"]["blockHash"]


def test_nested_lists_match_graphene(engine: Engine, chain: ChainFixture) -> None:
    for query in NESTED.values():
        body = both(engine, chain, query, n=12)
        assert "errors" not in body, body
    edges = both(engine, chain, NESTED["tx-lists"], n=12)["data"]["transactions"]["edges"]
    assert len(edges) == 12
    # the batched loads give what the per-object reads give
    with psycopg.connect(chain.dsn, autocommit=True) as conn:
        for e in edges:
            node = e["node"]
            block = read.block_by_height(conn, node["receipt"]["height"])
            assert block is not None and node["block"]["hash"] == block.hash.hex()
            assert node["receipt"]["blockHash"] == block.hash.hex()
            sender = node["senderIdentity"]
            assert sender["assets"] == read.assets_of(conn, bytes.fromhex(sender["keyId"]), 50)
        data = both(engine, chain, NESTED["identity-lists"])["data"]
        sent = 0
        for ident in data["identities"]:
            key = bytes.fromhex(ident["keyId"])
            txs = read.transactions_by_sender(conn, key, 4)
            assert [e["node"]["txId"] for e in ident["transactions"]["edges"]] == [
                t.tx_id.hex() for t in txs[:3]
            ]
            assert ident["transactions"]["pageInfo"]["hasNextPage"] == (len(txs) > 3)
            assert ident["assets"] == read.assets_of(conn, key, 50)
            sent += len(txs)
        assert sent > 0
        blocks = both(engine, chain, NESTED["block-lists"])["data"]["blocks"]["edges"]
        for e in blocks:
            height = e["node"]["height"]
            entries = read.transactions_by_block(conn, height, 4)
            page = e["node"]["transactions"]
            assert [t["node"]["txId"] for t in page["edges"]] == [
                t.tx_id.hex() for t in entries[:3]
            ]
            assert all(t["node"]["block"]["height"] == height for t in page["edges"])
            votes = queries.certificate_votes(conn, height)
            assert [v["position"] for v in e["node"]["certificate"]["votes"]] == [
                v.position for v in votes
            ]


class CountingCursor(psycopg.Cursor[Any]):
    """A real cursor that counts the statements it sends."""

    statements = 0

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        CountingCursor.statements += 1
        return super().execute(*args, **kwargs)


def test_batched_envelopes_match_the_transactions(engine: Engine, chain: ChainFixture) -> None:
    """Each entry gets its own envelope and arguments from the batched load (D49)."""
    edges = both(engine, chain, NESTED["tx-arguments"], n=40)["data"]["transactions"]["edges"]
    decoded = 0
    for e in edges:
        node = e["node"]
        if node["envelope"] is None:
            continue
        envelope = bytes.fromhex(node["envelope"])
        tx = parse_tx(envelope, signature_verified=True)
        assert tx.tx_id.hex() == node["txId"]
        if node["resultCode"] == 0:
            assert node["arguments"] is not None and node["operation"] == tx.operation
            decoded += 1
    assert decoded > 10
    key_set = both(engine, chain, NESTED["key-set"])["data"]["keySetTransactions"]
    operations = {parse_tx(bytes.fromhex(t["envelope"])).operation for t in key_set}
    assert operations and operations <= {"AddOperator", "ProposeMember", "CastVote"}
    assert [t["height"] for t in key_set] == sorted(t["height"] for t in key_set)


def test_key_registrations_name_the_entry_that_registered_a_key(
    engine: Engine, chain: ChainFixture
) -> None:
    """``keyRegistrations`` (D54): the accepted registrations of the blocks where a key first
    appeared, with envelopes the explorer decodes; bad ids are typed errors."""
    query = (
        "query($k: [String!]!) { keyRegistrations(keyIds: $k) "
        "{ txId height position operation resultCode envelope } }"
    )
    found = both(engine, chain, query, k=[chain.service.key_id.hex()])["data"]["keyRegistrations"]
    assert found and all(t["resultCode"] == 0 for t in found)
    assert {t["operation"] for t in found} <= {"RegisterIdentity", "RotateKey"}
    decoded = [parse_tx(bytes.fromhex(t["envelope"])) for t in found]
    assert any(
        tx.operation == "RegisterIdentity" and tx.args["public_key"] == chain.service.public_key
        for tx in decoded
    )
    assert both(engine, chain, query, k=["00" * 32])["data"]["keyRegistrations"] == []
    for bad in (["ab"], ["zz" * 32], ["00" * 32] * 18):
        body = both(engine, chain, query, k=bad)
        assert body["errors"] and body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", body


def test_one_statement_per_level(chain: ChainFixture) -> None:
    pool: ConnectionPool[Any] = ConnectionPool(
        chain.dsn,
        min_size=1,
        max_size=1,
        open=True,
        kwargs={"autocommit": True, "cursor_factory": CountingCursor},
    )
    try:
        # the Python plan's batching (D35); the SQL plan's single statement is checked below
        engine = Engine(Services(institution=INSTITUTION, pool=pool), Limits(), sql_json=False)
        expected = {
            # transactions; their blocks (receipt.blockHash shares them); their senders; the
            # senders' assets
            ("tx-lists", 12): 4,
            ("tx-lists", 40): 4,
            # identities; their assets; their transactions; the transactions' blocks; their
            # senders; institutions (two: operator keys, institutions); the operators' assets
            ("identity-lists", 0): 8,
            # blocks; their votes; their entries; the entries' blocks
            ("block-lists", 0): 4,
            # transactions; the envelopes of all of them (arguments and envelope share them),
            # however many (D49: no longer one statement per transaction)
            ("tx-arguments", 12): 2,
            ("tx-arguments", 40): 2,
            # blocks; their leaves; their entries; the entries' envelopes
            ("block-leaves", 0): 4,
            # the key-set entries; their envelopes
            ("key-set", 0): 2,
        }
        for (name, n), statements in expected.items():
            for compiled in (True, False):
                claims = chain.tokens.verifier.verify(chain.tokens.token(("chain:read",)))
                prepared = engine.prepare(NESTED[name], {"n": n}, None, claims)
                assert prepared.plan is not None
                if not compiled:
                    prepared = dataclasses.replace(prepared, plan=None)
                before = CountingCursor.statements
                body = engine.run(prepared, claims)
                assert "errors" not in body, body
                assert CountingCursor.statements - before == statements, (name, n, compiled)
        summary = engine.prepare(EXPLORER["dashboard"], {}, None, claims)
        before = CountingCursor.statements
        engine.run(summary, claims)
        assert CountingCursor.statements - before == 3  # summary, blocks, transactions
        # D59: the root fields PostgreSQL answers as JSON share one statement
        engine = Engine(Services(institution=INSTITUTION, pool=pool), Limits())
        with_sql = {
            "block-lists": 1,  # blocks, votes, entries and their blocks: one statement
            "identity-lists": 4,  # identities: one; institutions stay on Python (3)
            "dashboard": 1,  # summary, blocks and transactions (D65: recentTps finished in Python)
        }
        for name, statements in with_sql.items():
            query = EXPLORER.get(name) or NESTED[name]
            prepared = engine.prepare(query, {}, None, claims)
            assert prepared.plan is not None and prepared.plan.sql is not None
            before = CountingCursor.statements
            assert "errors" not in engine.run(prepared, claims)
            assert CountingCursor.statements - before == statements, name
    finally:
        pool.close()


def test_broken_and_hostile_queries_answer_as_graphene(engine: Engine, chain: ChainFixture) -> None:
    errors = [
        (EXPLORER["tx"], {"i": "zz"}),  # a resolver refuses its input
        (EXPLORER["block"], {}),  # neither height nor hash
        (EXPLORER["block"], {"h": "seven"}),  # a variable of the wrong type
        (EXPLORER["address"], {"k": "ab"}),  # wrong length
        ('{ recordProof(deviceKeyId: "00", sequence: 1) }', {}),
    ]
    for query, variables in errors:
        fallbacks = engine.fallbacks
        body = both(engine, chain, query, **variables)
        assert body["errors"], (query, body)
        assert engine.fallbacks == fallbacks + 1
    # shapes that are never compiled still answer through graphene
    for query in (
        "{ ...F } fragment F on Query { summary { height } }",
        "query($s: Boolean!) { summary @skip(if: $s) { height } }",
        "{ __schema { queryType { name } } }",
        "{ summary { height } summary { chainId } }",
    ):
        claims = chain.tokens.verifier.verify(chain.tokens.token(("chain:read",)))
        prepared = engine.prepare(query, {"s": False}, None, claims)
        assert prepared.plan is None
        assert "errors" not in engine.run(prepared, claims)
    with pytest.raises(PageTooLarge):  # a float page size in the variables is still checked
        both(engine, chain, "query($n: Int) { blocks(first: $n) { edges { cursor } } }", n=101.0)
