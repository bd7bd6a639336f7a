"""Every auth failure and every hostile-query limit, through the real app and database."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from gateway.auth.tokens import SigningKey
from gateway.limits import Limits
from harness.gateway_support import ChainFixture

pytestmark = pytest.mark.integration

SUMMARY = "{ summary { height } }"


@pytest.fixture(scope="module")
def client(chain: ChainFixture) -> Iterator[TestClient]:
    with TestClient(chain.app(), raise_server_exceptions=False) as c:
        yield c


def post(
    client: TestClient,
    query: str,
    token: str | None = None,
    *,
    header: str | None = None,
    **variables: Any,
) -> tuple[int, dict[str, Any]]:
    headers = {}
    if header is not None:
        headers["Authorization"] = header
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    r = client.post("/graphql", json={"query": query, "variables": variables}, headers=headers)
    body = r.json()
    assert "Traceback" not in r.text and "psycopg" not in r.text
    return r.status_code, body


def code_of(body: dict[str, Any]) -> str:
    return str(body["errors"][0]["extensions"]["code"])


def reason_of(body: dict[str, Any]) -> str:
    return str(body["errors"][0]["extensions"].get("reason"))


# -- authentication --------------------------------------------------------------------


def test_no_token(client: TestClient) -> None:
    status, body = post(client, SUMMARY)
    assert (status, code_of(body), reason_of(body)) == (401, "UNAUTHENTICATED", "missing")


@pytest.mark.parametrize("header", ["Basic dTpw", "Bearer", "Bearer not.a.jwt", "Bearer x"])
def test_malformed_token(client: TestClient, header: str) -> None:
    status, body = post(client, SUMMARY, header=header)
    assert (status, code_of(body), reason_of(body)) == (401, "UNAUTHENTICATED", "malformed")


def test_expired_token(chain: ChainFixture, client: TestClient) -> None:
    status, body = post(client, SUMMARY, chain.tokens.token(ttl=-10))
    assert (status, reason_of(body)) == (401, "expired")


def test_not_yet_valid_token(chain: ChainFixture, client: TestClient) -> None:
    later = int(time.time()) + 300
    status, body = post(client, SUMMARY, chain.tokens.token(nbf=later, iat=later))
    assert (status, reason_of(body)) == (401, "not_yet_valid")


def test_wrong_signature(chain: ChainFixture, client: TestClient) -> None:
    token = chain.tokens.token()
    head, payload, sig = token.split(".")
    forged = f"{head}.{payload}.{('A' if sig[0] != 'A' else 'B') + sig[1:]}"
    status, body = post(client, SUMMARY, forged)
    assert (status, reason_of(body)) == (401, "bad_signature")


def test_unknown_key(chain: ChainFixture, client: TestClient) -> None:
    stranger = SigningKey.generate(int(time.time()))
    status, body = post(client, SUMMARY, chain.tokens.token(key=stranger))
    assert (status, reason_of(body)) == (401, "unknown_kid")


def test_wrong_algorithm(client: TestClient) -> None:
    import jwt  # noqa: PLC0415

    token = jwt.encode(
        {"sub": "x"}, "secret-secret-secret-secret-32b!", algorithm="HS256", headers={"kid": "k"}
    )
    status, body = post(client, SUMMARY, token)
    assert (status, reason_of(body)) == (401, "wrong_alg")


def test_wrong_issuer_audience_institution(chain: ChainFixture, client: TestClient) -> None:
    assert reason_of(post(client, SUMMARY, chain.tokens.token(iss="evil"))[1]) == "wrong_issuer"
    assert reason_of(post(client, SUMMARY, chain.tokens.token(aud="other"))[1]) == "wrong_audience"
    status, body = post(client, SUMMARY, chain.tokens.token(inst="inst-2"))
    assert (status, reason_of(body)) == (401, "wrong_institution")


def test_missing_permissions(chain: ChainFixture, client: TestClient) -> None:
    nothing = chain.tokens.token(())
    status, body = post(client, SUMMARY, nothing)
    assert (status, code_of(body)) == (403, "FORBIDDEN")
    assert body["errors"][0]["extensions"]["required"] == "chain:read"
    reader = chain.tokens.token(("chain:read",))
    status, body = post(client, 'mutation { submitTransaction(envelope: "AA==") { txId } }', reader)
    assert (status, body["errors"][0]["extensions"]["required"]) == (403, "chain:write")
    writer = chain.tokens.token(("chain:read", "chain:write"))
    status, body = post(
        client, 'mutation { createUser(login: "x", password: "y") { userId } }', writer
    )
    assert (status, body["errors"][0]["extensions"]["required"]) == (403, "admin")
    # a permission hidden behind a fragment is still checked
    status, body = post(
        client, "query { ...F } fragment F on Query { summary { height } }", nothing
    )
    assert status == 403
    # `me` needs any valid token, introspection none
    assert post(client, "{ me { sub } }", nothing)[0] == 200
    assert post(client, "{ __schema { queryType { name } } }")[0] == 200


def test_login_without_accounts_is_a_typed_error(client: TestClient) -> None:
    status, body = post(
        client, 'mutation { login(username: "a", password: "b") { token error { code message } } }'
    )
    assert status == 200
    assert body["data"]["login"]["error"]["code"] == "SERVICE_UNAVAILABLE"


def test_websocket_auth(chain: ChainFixture, client: TestClient) -> None:
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init", "payload": {"token": "bad.to.ken"}})
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 4403
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init", "payload": {}})
        assert ws.receive_json()["type"] == "connection_ack"
        ws.send_json(
            {
                "id": "a",
                "type": "subscribe",
                "payload": {"query": "subscription { newBlock { height } }"},
            }
        )
        err = ws.receive_json()
        assert err["type"] == "error" and err["payload"][0]["extensions"]["code"] == (
            "UNAUTHENTICATED"
        )


# -- hostile queries ---------------------------------------------------------------------


def test_depth_limit(chain: ChainFixture, client: TestClient) -> None:
    token = chain.tokens.token()
    deep = (
        '{ transaction(id: "00") { block { transactions(first: 1) { edges { node {'
        " block { transactions(first: 1) { edges { node { block { height } } } } } } } } } }"
        " }"
    )
    status, body = post(client, deep, token)
    assert (status, code_of(body)) == (400, "QUERY_TOO_DEEP")
    assert body["errors"][0]["extensions"]["limit"] == Limits().max_depth
    very_deep = "{ summary " + "{ height " * 3000 + "}" * 3001
    status, body = post(client, very_deep, token)
    assert status == 400 and code_of(body) in ("QUERY_TOO_DEEP", "GRAPHQL_PARSE_FAILED")


def test_cost_limit(chain: ChainFixture, client: TestClient) -> None:
    token = chain.tokens.token()
    costly = """{ blocks(first: 100) { edges { node { height
                   transactions(first: 100) { edges { node { txId sender } } } } } } }"""
    status, body = post(client, costly, token)
    assert (status, code_of(body)) == (400, "QUERY_TOO_COSTLY")


def test_page_size_limit(chain: ChainFixture, client: TestClient) -> None:
    token = chain.tokens.token()
    status, body = post(client, "{ blocks(first: 1000) { edges { cursor } } }", token)
    assert (status, code_of(body)) == (400, "PAGE_SIZE_EXCEEDED")
    assert body["errors"][0]["extensions"]["actual"] == 1000
    q = "query($n: Int) { transactions(first: $n) { edges { cursor } } }"
    status, body = post(client, q, token, n=101)
    assert (status, code_of(body)) == (400, "PAGE_SIZE_EXCEEDED")


def test_alias_limit(chain: ChainFixture, client: TestClient) -> None:
    token = chain.tokens.token()
    many = "{ " + " ".join(f"a{i}: summary {{ height }}" for i in range(50)) + " }"
    status, body = post(client, many, token)
    assert (status, code_of(body)) == (400, "TOO_MANY_ALIASES")


def test_body_size_limit(chain: ChainFixture, client: TestClient) -> None:
    token = chain.tokens.token()
    huge = "{ summary { height } }" + " " * 40_000
    status, body = post(client, huge, token)
    assert (status, code_of(body)) == (413, "BODY_TOO_LARGE")


def test_token_limit_and_fragment_bombs(chain: ChainFixture, client: TestClient) -> None:
    token = chain.tokens.token()
    status, body = post(client, "{" + "summary{height}" * 1500 + "}", token)
    assert status == 400 and code_of(body) == "GRAPHQL_PARSE_FAILED"
    frags = (
        "".join(f"fragment F{i} on Block {{ ...F{i + 1} ...F{i + 1} height }} " for i in range(30))
        + "fragment F30 on Block { hash }"
    )
    bomb = "{ blocks(first: 1) { edges { node { ...F0 } } } } " + frags
    started = time.monotonic()
    status, body = post(client, bomb, token)
    assert (status, code_of(body)) == (400, "QUERY_TOO_COSTLY")
    assert time.monotonic() - started < 2.0
    cyclic = "{ blocks { edges { node { ...A } } } } fragment A on Block { ...A height }"
    status, body = post(client, cyclic, token)
    assert (status, code_of(body)) == (400, "GRAPHQL_VALIDATION_FAILED")


def test_malformed_requests(chain: ChainFixture, client: TestClient) -> None:
    token = {"Authorization": f"Bearer {chain.tokens.token()}"}
    r = client.post("/graphql", content=b"not json", headers=token)
    assert r.status_code == 400 and r.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    r = client.post("/graphql", json={"query": "{ summary { height "}, headers=token)
    assert r.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    r = client.post("/graphql", json={"query": "{ nope }"}, headers=token)
    assert r.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    r = client.post(
        "/graphql", json={"query": "subscription { newBlock { height } }"}, headers=token
    )
    assert r.status_code == 400


def test_auth_failures_are_counted(client: TestClient) -> None:
    post(client, SUMMARY)
    text = client.get("/metrics").text
    assert 'pantheon_gateway_auth_failures_total{institution="inst-1",reason="missing"}' in text
    assert "pantheon_gateway_limited_total" in text
