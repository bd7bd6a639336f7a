"""The compiled execution path answers exactly as graphene does, on real chain data.

Every explorer query (``gateway/static/explorer.js``), shapes that exercise the batched
loads, and hostile or broken queries run twice through one :class:`Engine`: once on the
compiled plan and once on graphene (the same prepared operation without its plan); the
response bodies must be equal, and the explorer's queries must really take the compiled
path (no silent fallback).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from gateway.context import Services
from gateway.engine import Engine, encode
from gateway.errors import PageTooLarge
from gateway.limits import Limits
from infra.postgres_server import Postgres
from tests.integration.test_gateway_support import INSTITUTION, ChainFixture

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
def chain(
    bootstrap: str, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChainFixture]:
    fixture = ChainFixture(bootstrap, postgres.dsn("postgres"), tmp_path_factory.mktemp("gwc"))
    yield fixture
    fixture.close()


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
    assert all(e["node"]["block"]["height"] == e["node"]["receipt"]["height"] for e in edges)


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
