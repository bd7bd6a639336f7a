"""Public chain data (decisions D39): anonymous callers read the chain where the gateway allows
it, and nothing else; a gateway without ``public_chain`` still refuses them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from harness.gateway_support import ChainFixture

pytestmark = pytest.mark.integration

CHAIN_READS = [
    "{ summary { height txCount } }",
    "{ blocks(first: 3) { edges { node { height hash certificate { votes { signature } } } } } }",
    "{ transactions(first: 3) { edges { node { txId operation arguments } } } }",
    "{ institutions { id operators { keyId } } }",
    "{ proposals { id status } }",
    '{ devices(institution: "inst-1") { keyId label } }',
    '{ anchors(institution: "inst-1") { dataId sha256 } }',
    "{ l2Batches { batchId merkleRoot } }",
]
PRIVATE = [
    "{ me { sub } }",
    'mutation { createUser(login: "x", password: "long enough pw") { userId } }',
    'mutation { grantPermission(subject: "u-1", permission: "admin") { ok } }',
    'mutation { submitTransaction(envelope: "AAAA") { txId } }',
    'mutation { proposeRemoval(institutionId: "inst-2") { txId } }',
    'mutation { castVote(proposalId: "00", approve: true) { txId } }',
    "{ summary { height } me { sub } }",
]


@pytest.fixture(scope="module")
def public(chain: ChainFixture) -> Iterator[TestClient]:
    with TestClient(chain.app(public_chain=True), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def private(chain: ChainFixture) -> Iterator[TestClient]:
    with TestClient(chain.app(), raise_server_exceptions=False) as c:
        yield c


def post(client: TestClient, query: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = client.post("/graphql", json={"query": query}, headers=headers)
    return r.status_code, r.json()


@pytest.mark.parametrize("query", CHAIN_READS)
def test_anonymous_reads_public_chain_data(public: TestClient, query: str) -> None:
    status, body = post(public, query)
    assert status == 200, body
    assert "errors" not in body and body["data"]


@pytest.mark.parametrize("query", PRIVATE)
def test_anonymous_is_refused_everything_private(public: TestClient, query: str) -> None:
    status, body = post(public, query)
    assert status == 401, body
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert "data" not in body


def test_a_private_gateway_refuses_anonymous_chain_reads(private: TestClient) -> None:
    for query in CHAIN_READS[:3]:
        status, body = post(private, query)
        assert status == 401 and body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_a_bad_token_is_refused_not_downgraded_to_anonymous(public: TestClient) -> None:
    status, body = post(public, "{ summary { height } }", "not.a.token")
    assert status == 401, body


def test_a_token_still_works_and_me_answers(public: TestClient, chain: ChainFixture) -> None:
    token = chain.tokens.token(("chain:read",), sub="u-reader")
    status, body = post(public, "{ summary { height } me { sub permissions } }", token)
    assert status == 200 and body["data"]["me"]["sub"] == "u-reader"
    token = chain.tokens.token((), sub="u-nothing")  # a token without chain:read is refused
    status, body = post(public, "{ summary { height } }", token)
    assert status == 403, body


def test_decoded_arguments_of_an_anchor(public: TestClient, chain: ChainFixture) -> None:
    chain.wait_projected(chain.add_blocks(1))
    status, body = post(
        public, "{ transactions(first: 1) { edges { node { operation sender arguments } } } }"
    )
    assert status == 200, body
    node = body["data"]["transactions"]["edges"][0]["node"]
    assert node["operation"] == "AnchorData"
    args = json.loads(node["arguments"])
    assert args["data_id"].startswith("live-")
    assert len(args["sha256"]) == 64 and int(args["sha256"], 16) >= 0


def _subscribe(client: TestClient) -> dict[str, Any]:
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init", "payload": {}})
        assert ws.receive_json()["type"] == "connection_ack"
        query = "subscription { newBlock { height } }"
        ws.send_json({"id": "a", "type": "subscribe", "payload": {"query": query}})
        message: dict[str, Any] = ws.receive_json()
        return message


def test_anonymous_subscription_where_public_only(
    public: TestClient, private: TestClient, chain: ChainFixture
) -> None:
    refused = _subscribe(private)
    assert refused["type"] == "error"
    assert refused["payload"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    with public.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init", "payload": {}})
        assert ws.receive_json()["type"] == "connection_ack"
        query = "subscription { newBlock { height } }"
        ws.send_json({"id": "a", "type": "subscribe", "payload": {"query": query}})
        target = chain.add_blocks(1)
        message = ws.receive_json()
        assert message["type"] == "next", message
        assert message["payload"]["data"]["newBlock"]["height"] <= target


def test_favicon_and_graphiql_page(public: TestClient) -> None:
    icon = public.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    page = public.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "GraphiQL" in page.text or "playground" in page.text  # without ./dev: the fallback
    assert "unpkg" not in page.text and "cdn" not in page.text.lower()
