"""Root fields PostgreSQL answers as JSON (D59) give exactly the reference's bytes.

Each query runs three ways through one :class:`Engine`: the SQL-JSON plan, the Python plan
(``sql_json=False``) and graphene; the encoded bodies must be equal, on a chain whose rows
were then altered in PostgreSQL (unicode and control characters, 64-bit numbers, a
tampered hash and certificate vote, a height beyond GraphQL's ``Int``) and on a database
with no chain at all.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from gateway.context import Services
from gateway.engine import Engine, encode
from gateway.limits import Limits
from harness.gateway_support import INSTITUTION, ChainFixture
from infra.postgres_server import Postgres
from projections.projector import ensure_database, migrate

pytestmark = pytest.mark.integration

TX = "txId height position offset result ok sender nonce operation resultCode"
SUMMARY = "chainId height finalHeight lastHash txCount okCount institutionCount recentTps"
QUERIES = {
    "dashboard": (
        f"{{ summary {{ {SUMMARY} }} "
        "blocks(first: 15) { edges { node { height hash txCount okCount timestamp } } } "
        f"transactions(first: 15) {{ edges {{ node {{ {TX} }} }} }} }}"
    ),
    "explorer": (  # gateway/static/explorer.js's dashboard, with the envelope
        f"{{ summary {{ {SUMMARY} }} blocks(first: 60) {{ edges {{ node {{ height hash txCount "
        "okCount timestamp timestampMs } } } transactions(first: 15) { edges { node { txId "
        "height position result sender operation arguments envelope senderIdentity { role "
        "institutionId label } } } } }"
    ),
    "summaries": (
        "{ s: summary { __typename t: recentTps h: height recentTps i: institutionCount } "
        "summary { lastHash okCount } }"
    ),
    "aliases": (
        "query($n: Int, $after: String) { a: blocks(first: $n, after: $after) { __typename "
        "e: edges { __typename c: cursor n: node { __typename h: height x: hash "
        "certificate { height blockHash encoded votes { position institutionId "
        "operatorKeyId publicKey signature } } "
        f"transactions(first: 2) {{ edges {{ cursor node {{ {TX} block {{ height }} "
        "receipt { code ok height position blockHash } senderIdentity { keyId label } } } "
        "pageInfo { hasNextPage endCursor __typename } } } } "
        "p: pageInfo { hasNextPage endCursor } } b: blocks(first: 0) { edges { cursor } "
        "pageInfo { hasNextPage endCursor } } }"
    ),
    "block": (
        "query($h: Int, $x: String) { block(height: $h, hash: $x) { height hash prevHash "
        "stateRoot txRoot validatorSetHash timestamp txCount okCount firstOffset lastOffset "
        "certificate { votes { institutionId operatorKeyId signature } } "
        f"transactions(first: 100) {{ edges {{ node {{ {TX} }} }} "
        "pageInfo { hasNextPage } } } }"
    ),
    "tx": (
        "query($i: String!) { transaction(id: $i) { txId height position offset result sender "
        "nonce operation receipt { code blockHash } senderIdentity { role institutionId label } } }"
    ),
    "address": (
        "query($k: String!, $after: String) { identity(keyId: $k) { keyId publicKey role "
        "institutionId label active nextNonce assets(first: 3) transactions(first: 5, "
        f"after: $after) {{ edges {{ cursor node {{ {TX} }} }} pageInfo {{ endCursor }} }} }} "
        f"transactions(first: 50, sender: $k) {{ edges {{ node {{ {TX} }} }} }} }}"
    ),
    "lists": (
        "query($i: String!) { devices(institution: $i, first: 20) { keyId label } "
        "identities(institution: $i, first: 7) { keyId role label nextNonce assets } "
        'services: identities(institution: $i, role: "SERVICE") { keyId } }'
    ),
}


def three_ways(pool: ConnectionPool[Any], chain: ChainFixture, query: str, **v: Any) -> bytes:
    """The body on the SQL plan; asserts the Python plan and graphene give the same bytes."""
    claims = chain.tokens.verifier.verify(chain.tokens.token(("chain:read",)))
    with_sql = Engine(Services(institution=INSTITUTION, pool=pool), Limits())
    python = Engine(Services(institution=INSTITUTION, pool=pool), Limits(), sql_json=False)
    prepared = with_sql.prepare(query, v, None, claims)
    assert prepared.plan is not None and prepared.plan.sql is not None, query
    body = encode(with_sql.run(prepared, claims))
    reference = python.prepare(query, v, None, claims)
    assert reference.plan is not None and reference.plan.sql is None
    assert body == encode(python.run(reference, claims)), query
    assert body == encode(python.run(dataclasses.replace(reference, plan=None), claims))
    return body


def samples(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        tx, sender, block_hash = conn.execute(
            "SELECT t.tx_id, t.sender, b.hash FROM chain.transactions t JOIN chain.blocks b "
            "USING (height) WHERE sender IS NOT NULL ORDER BY height DESC LIMIT 1"
        ).fetchone() or (b"", b"", b"")
    return {"tx": bytes(tx).hex(), "sender": bytes(sender).hex(), "hash": bytes(block_hash).hex()}


def run_all(pool: ConnectionPool[Any], chain: ChainFixture, s: dict[str, str]) -> None:
    three_ways(pool, chain, QUERIES["dashboard"])
    three_ways(pool, chain, QUERIES["summaries"])
    three_ways(pool, chain, QUERIES["explorer"])
    cursor = None
    for n in (3, 1, 0, -1, 12):
        page = three_ways(pool, chain, QUERIES["aliases"], n=n, after=cursor)
        assert b'"a":{"__typename":"BlockConnection","e":[' in page
    for v in (
        {"h": 1},
        {"h": chain.height},
        {"x": s["hash"]},
        {"h": 10**6},
        {"x": "00" * 32},
        {},
        {"x": "zz"},
        {"h": 2**40},
    ):
        three_ways(pool, chain, QUERIES["block"], **v)
    for i in (s["tx"], "00" * 32, "ab"):
        three_ways(pool, chain, QUERIES["tx"], i=i)
    for k in (s["sender"], "11" * 32):
        three_ways(pool, chain, QUERIES["address"], k=k)
        three_ways(pool, chain, QUERIES["address"], k=k, after="bad cursor")
    for i in ("inst-1", "nobody"):
        three_ways(pool, chain, QUERIES["lists"], i=i)


def test_the_sql_plan_answers_as_the_reference(chain: ChainFixture) -> None:
    run_all(chain.pool, chain, samples(chain.dsn))


def _arguments_by_entry(body: bytes) -> dict[tuple[int, int], Any]:
    edges = json.loads(body)["data"]["transactions"]["edges"]
    return {(e["node"]["height"], e["node"]["position"]): e["node"]["arguments"] for e in edges}


def test_kept_arguments_follow_the_rows_own_bytes(chain: ChainFixture) -> None:
    """D68: decoded ``arguments`` are kept by the envelope's own text, so a row whose
    envelope changes (here two entries swap theirs, after both were served and kept) is
    answered from its new bytes on all three paths, and restoring them restores the answer."""
    before = three_ways(chain.pool, chain, QUERIES["explorer"])
    shown = _arguments_by_entry(before)
    with psycopg.connect(chain.dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT height, position, envelope FROM chain.transactions "
            "WHERE envelope IS NOT NULL ORDER BY height DESC, position DESC LIMIT 15"
        ).fetchall()
        first = rows[0]
        other = next(r for r in rows if shown[(r[0], r[1])] != shown[(first[0], first[1])])
        swap = "UPDATE chain.transactions SET envelope = %s WHERE height = %s AND position = %s"
        conn.execute(swap, (other[2], first[0], first[1]))
        conn.execute(swap, (first[2], other[0], other[1]))
    try:
        swapped = _arguments_by_entry(three_ways(chain.pool, chain, QUERIES["explorer"]))
        a, b = (first[0], first[1]), (other[0], other[1])
        assert swapped == {**shown, a: shown[b], b: shown[a]}
    finally:
        with psycopg.connect(chain.dsn, autocommit=True) as conn:
            conn.execute(swap, (first[2], first[0], first[1]))
            conn.execute(swap, (other[2], other[0], other[1]))
    assert three_ways(chain.pool, chain, QUERIES["explorer"]) == before


def test_the_python_plans_newest_rows_get_generic_plans(chain: ChainFixture) -> None:
    """D68: the Python plan's newest blocks and transactions have their LIMIT as a literal,
    so PostgreSQL keeps a generic plan for them instead of planning every execution."""
    pool: ConnectionPool[Any] = ConnectionPool(
        chain.dsn, min_size=1, max_size=1, open=True, kwargs={"autocommit": True}
    )
    try:
        for _ in range(20):  # the Python plan and graphene each run both statements
            three_ways(pool, chain, QUERIES["dashboard"])
        with pool.connection() as conn:
            plans = conn.execute(
                "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements "
                "WHERE statement LIKE '%DESC LIMIT 16'"
            ).fetchall()
        assert len(plans) == 2, plans  # blocks, transactions
        for _statement, generic, custom in plans:
            assert custom <= 5 < generic, plans
    finally:
        pool.close()


def test_altered_rows_are_served_as_the_reference_serves_them(chain: ChainFixture) -> None:
    """What PostgreSQL holds is served unchanged by both paths, so the explorer's checks
    (D39, D49) see the same tampered rows and refuse them as before."""
    s = samples(chain.dsn)
    label = 'ünïcode 😀 "quoted" \\ back\u0001slash </script>'
    with psycopg.connect(chain.dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE chain.keys SET label = %s, next_nonce = %s WHERE key_id = %s",
            (label, 2**63 - 1, bytes.fromhex(s["sender"])),
        )
        conn.execute(
            "UPDATE chain.transactions SET nonce = %s, tx_offset = tx_offset + %s, "
            "operation = %s WHERE tx_id = %s",
            (-(2**62), 2**62, "Ωp\u2028", bytes.fromhex(s["tx"])),
        )
        conn.execute(
            "UPDATE chain.blocks SET prev_hash = '\\x00' WHERE hash = %s",
            (bytes.fromhex(s["hash"]),),
        )
        conn.execute("UPDATE chain.block_votes SET signature = '\\xdead' WHERE position = 0")
        conn.execute("UPDATE chain.transactions SET result_code = 99 WHERE position = 1")
        # recentTps 9 tx / 2,000 s = 0.0045 rounds (as a binary float) to 0.004, where a
        # decimal round half up in SQL would give 0.005; counts beyond 32 bits, no members
        conn.execute(
            "UPDATE chain.blocks b SET tx_count = CASE WHEN b.height = n.top THEN 9 ELSE 0 END, "
            "timestamp_ms = CASE WHEN b.height = n.top THEN 1002000000 ELSE 1000000000 END "
            "FROM (SELECT max(height) AS top FROM chain.blocks) n WHERE b.height > n.top - 20"
        )
        conn.execute("UPDATE chain.meta SET tx_count = %s, ok_count = -1", (2**62,))
        # envelopes that do not decode, or are missing (arguments null)
        conn.execute(
            "UPDATE chain.transactions SET envelope = CASE WHEN position = 0 THEN NULL "
            "ELSE '\\x00ff'::bytea END WHERE height = (SELECT max(height) FROM chain.blocks)"
        )
        conn.execute("UPDATE chain.institutions SET status = 'REMOVED'")
    run_all(chain.pool, chain, s)
    summary = three_ways(chain.pool, chain, QUERIES["dashboard"])
    assert b'"institutionCount":0,"recentTps":0.004}' in summary, summary[:300].decode()
    # a time the resolver's float arithmetic rounds (the last millisecond of year 9999):
    # the SQL path refuses it and graphene answers as the reference
    with psycopg.connect(chain.dsn, autocommit=True) as conn:
        conn.execute("UPDATE chain.blocks SET timestamp_ms = 253402300799999 WHERE height = 2")
    try:
        far = three_ways(chain.pool, chain, QUERIES["explorer"])
        assert b'"timestampMs":253402300799999.0' in far and b'"9999-12-31T23:59:59.' in far
    finally:
        with psycopg.connect(chain.dsn, autocommit=True) as conn:
            conn.execute("UPDATE chain.blocks SET timestamp_ms = 1000000000 WHERE height = 2")
    body = three_ways(chain.pool, chain, QUERIES["address"], k=s["sender"])
    assert "ünïcode 😀".encode() in body
    assert str(2**63 - 1).encode() in body
    # a height beyond GraphQL's Int: both paths refuse the same way (graphene's error)
    with psycopg.connect(chain.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO chain.blocks SELECT 2^40, '\\xff', prev_hash, first_offset, "
            "last_offset, tx_root, state_root, validator_set_hash, timestamp_ms, tx_count, "
            "ok_count, certificate, source_offset FROM chain.blocks WHERE height = 1"
        )
    try:
        refused = three_ways(chain.pool, chain, QUERIES["dashboard"])
        assert b'"errors"' in refused
    finally:
        with psycopg.connect(chain.dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM chain.blocks WHERE height = 2^40")


def test_an_empty_chain(chain: ChainFixture, postgres: Postgres) -> None:
    dsn = ensure_database(postgres.dsn("postgres"), "gw_sql_empty")
    migrate(dsn)
    pool: ConnectionPool[Any] = ConnectionPool(
        dsn, min_size=1, max_size=2, open=True, kwargs={"autocommit": True}
    )
    try:
        body = three_ways(pool, chain, QUERIES["dashboard"])
        assert body == (
            b'{"data":{"summary":null,"blocks":{"edges":[]},"transactions":{"edges":[]}}}'
        )
        three_ways(pool, chain, QUERIES["summaries"])
        three_ways(pool, chain, QUERIES["aliases"], n=5)
        three_ways(pool, chain, QUERIES["block"], h=1)
        three_ways(pool, chain, QUERIES["lists"], i="inst-1")
    finally:
        pool.close()


def test_the_dashboard_statement_gets_a_generic_plan(chain: ChainFixture) -> None:
    """D65: page sizes are literals in the statement, so PostgreSQL's cost estimate of its
    generic plan knows them and it stops planning the prepared statement on every request
    (with ``LIMIT $n`` it kept a custom plan: half the dashboard's PostgreSQL CPU)."""
    pool: ConnectionPool[Any] = ConnectionPool(
        chain.dsn, min_size=1, max_size=1, open=True, kwargs={"autocommit": True}
    )
    try:
        for _ in range(20):  # psycopg prepares it on the 6th; PostgreSQL plans 5 times
            three_ways(pool, chain, QUERIES["dashboard"])
        with pool.connection() as conn:
            plans = conn.execute(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                "WHERE statement LIKE %s",
                ("SELECT ((SELECT json_build_object('chainId'%",),
            ).fetchall()
        assert len(plans) == 1, plans
        generic, custom = plans[0]
        assert custom <= 5 < generic, plans
    finally:
        pool.close()


def test_page_sizes_beyond_the_kept_texts(chain: ChainFixture) -> None:
    """Each page size is a statement text of its own; past the texts a plan keeps, the
    statement is made per request and answers the same."""
    claims = chain.tokens.verifier.verify(chain.tokens.token(("chain:read",)))
    with_sql = Engine(Services(institution=INSTITUTION, pool=chain.pool), Limits())
    python = Engine(Services(institution=INSTITUTION, pool=chain.pool), Limits(), sql_json=False)
    query = "query($n: Int) { blocks(first: $n) { edges { cursor } pageInfo { endCursor } } }"
    plan = with_sql.prepare(query, {}, None, claims).plan
    assert plan is not None and plan.sql is not None
    for n in range(-1, 80):
        body = encode(with_sql.run(with_sql.prepare(query, {"n": n}, None, claims), claims))
        assert body == encode(python.run(python.prepare(query, {"n": n}, None, claims), claims))
        assert body.count(b'"cursor"') == max(0, min(n, chain.height))
    assert with_sql.fallbacks == 0


def test_the_explorer_dashboard_is_one_statement(chain: ChainFixture) -> None:
    """D65: every root field of the explorer's dashboard is on the SQL path, the decoded
    arguments and ``timestampMs`` finished in Python from what the statement read."""
    claims = chain.tokens.verifier.verify(chain.tokens.token(("chain:read",)))
    engine = Engine(Services(institution=INSTITUTION, pool=chain.pool), Limits())
    prepared = engine.prepare(QUERIES["explorer"], {}, None, claims)
    assert prepared.plan is not None and prepared.plan.sql is not None
    assert prepared.plan.sql.keys == ("summary", "blocks", "transactions")
    body = three_ways(chain.pool, chain, QUERIES["explorer"])
    assert b'"arguments":"{' in body and b'"timestampMs":1' in body
