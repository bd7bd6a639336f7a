"""GraphQL through the real ASGI app against PostgreSQL filled by the real pipeline."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from harness.gateway_support import ALL, INSTITUTION, ChainFixture
from ledger.tx import parse_tx

pytestmark = pytest.mark.integration

BLOCKS = """query Latest($first: Int, $after: String) {
  summary { chainId height finalHeight txCount okCount institutionCount recentTps }
  blocks(first: $first, after: $after) {
    edges { cursor node { height hash prevHash txCount okCount timestamp
      certificate { blockHash votes { institutionId operatorKeyId signature } } } }
    pageInfo { hasNextPage endCursor }
  }
}"""


@pytest.fixture(scope="module")
def client(chain: ChainFixture) -> Iterator[TestClient]:
    with TestClient(chain.app(poll_interval_s=0.05)) as c:
        yield c


def gql(client: TestClient, token: str | None, query: str, **variables: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = client.post("/graphql", json={"query": query, "variables": variables}, headers=headers)
    return r.status_code, r.json()


def test_summary_and_block_pages(chain: ChainFixture, client: TestClient) -> None:
    token = chain.tokens.token()
    status, body = gql(client, token, BLOCKS, first=3)
    assert status == 200, body
    summary = body["data"]["summary"]
    assert summary["height"] == summary["finalHeight"] >= chain.height
    assert summary["institutionCount"] == 4 and summary["txCount"] > 50
    page = body["data"]["blocks"]
    heights = [e["node"]["height"] for e in page["edges"]]
    top = summary["height"]
    assert heights == [top, top - 1, top - 2]
    assert page["pageInfo"]["hasNextPage"] is True
    first = page["edges"][0]["node"]
    assert first["certificate"]["blockHash"] == first["hash"]
    assert len(first["certificate"]["votes"]) == 3  # quorum of 4
    status, body2 = gql(client, token, BLOCKS, first=3, after=page["pageInfo"]["endCursor"])
    assert [e["node"]["height"] for e in body2["data"]["blocks"]["edges"]] == [
        top - 3,
        top - 4,
        top - 5,
    ]
    assert (
        page["edges"][1]["node"]["prevHash"] == body["data"]["blocks"]["edges"][2]["node"]["hash"]
    )


def test_block_transaction_sender_path(chain: ChainFixture, client: TestClient) -> None:
    token = chain.tokens.token()
    q = """query($h: Int) { block(height: $h) { hash transactions(first: 5) {
             edges { node { txId position result ok sender operation
               receipt { code ok height blockHash } } } } } }"""
    _, body = gql(client, token, q, h=1)
    block = body["data"]["block"]
    tx = block["transactions"]["edges"][0]["node"]
    assert tx["receipt"]["blockHash"] == block["hash"] and tx["receipt"]["height"] == 1
    _, by_hash = gql(
        client, token, "query($x: String) { block(hash: $x) { height } }", x=block["hash"]
    )
    assert by_hash["data"]["block"]["height"] == 1
    q2 = """query($id: String!) { transaction(id: $id) { txId height sender
              senderIdentity { keyId role institutionId label
                transactions(first: 2) { edges { node { txId } } pageInfo { hasNextPage } } }
              block { height } } }"""
    _, body = gql(client, token, q2, id=tx["txId"])
    found = body["data"]["transaction"]
    assert found["txId"] == tx["txId"] and found["block"]["height"] == 1
    ident = found["senderIdentity"]
    assert ident["keyId"] == tx["sender"] and ident["role"] == "GOVERNANCE"
    assert ident["institutionId"] == INSTITUTION
    assert ident["transactions"]["pageInfo"]["hasNextPage"] is True
    _, latest = gql(
        client,
        token,
        "{ transactions(first: 4) { edges { node { height position } } pageInfo { endCursor } } }",
    )
    nodes = [
        (n["node"]["height"], n["node"]["position"])
        for n in latest["data"]["transactions"]["edges"]
    ]
    assert nodes == sorted(nodes, reverse=True) and len(nodes) == 4


def test_institutions_proposals_identities_assets(chain: ChainFixture, client: TestClient) -> None:
    token = chain.tokens.token()
    q = """{ institutions { id status operators { keyId role } }
             proposals { id kind institutionId status votes { institutionId approve } }
             devices(institution: "inst-1") { label active }
             identities(institution: "inst-1", role: "SERVICE") { label }
             anchor(dataId: "doc-1") { dataId sha256 height }
             anchors(institution: "inst-1", first: 3) { dataId }
             asset(assetId: "asset-1") { ownerKeyId history { ownerKeyId height } }
             l2Batches { batchId leafCount } }"""
    status, body = gql(client, token, q)
    assert status == 200 and "errors" not in body, body
    data = body["data"]
    assert [i["id"] for i in data["institutions"]] == ["inst-1", "inst-2", "inst-3", "inst-4"]
    assert len(data["institutions"][1]["operators"]) == 2
    assert data["proposals"][0]["institutionId"] == "newco"
    assert len(data["proposals"][0]["votes"]) == 3
    assert data["devices"] == [{"label": "sensor-1", "active": False}]
    assert data["identities"] == [{"label": "svc"}]
    assert data["anchor"]["dataId"] == "doc-1" and len(data["anchors"]) == 3
    assert len(data["asset"]["history"]) == 3
    assert data["l2Batches"] == [{"batchId": "b-1", "leafCount": 3}]


def test_me_and_bad_input(chain: ChainFixture, client: TestClient) -> None:
    token = chain.tokens.token(("chain:read", "admin"), sub="u-ada")
    _, body = gql(client, token, "{ me { sub institution permissions groups expiresAt } }")
    assert body["data"]["me"]["sub"] == "u-ada"
    assert body["data"]["me"]["permissions"] == ["admin", "chain:read"]
    status, body = gql(client, token, '{ block(hash: "zz") { height } }')
    assert status == 200 and body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    _, body = gql(client, token, '{ blocks(after: "bm9wZQ") { edges { cursor } } }')
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "Traceback" not in str(body)
    unknown = "ab" * 32  # no such device: no proof (yet)
    _, body = gql(client, token, f'{{ recordProof(deviceKeyId: "{unknown}", sequence: 0) }}')
    assert body == {"data": {"recordProof": None}}
    _, body = gql(client, token, '{ recordProof(deviceKeyId: "xyz", sequence: 0) }')
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_submit_transaction_end_to_end(chain: ChainFixture, client: TestClient) -> None:
    writer = chain.tokens.token(("chain:read", "chain:write"))
    with chain.lock:
        raw = chain.sim.tx(
            chain.service,
            "AnchorData",
            {"data_id": "via-gateway", "sha256": bytes(32), "metadata": "{}"},
        )
    q = """mutation($e: String!) { submitTransaction(envelope: $e) {
             txId sender nonce operation error { code message } } }"""
    status, body = gql(client, writer, q, e=base64.b64encode(raw).decode())
    result = body["data"]["submitTransaction"]
    assert status == 200 and result["error"] is None, body
    assert result["txId"] == parse_tx(raw).tx_id.hex() and result["operation"] == "AnchorData"
    with chain.lock:
        chain.height = chain.sim.finalize()
    chain.wait_projected(chain.height)
    reader = chain.tokens.token()
    deadline = time.monotonic() + 10
    while True:
        _, found = gql(
            client, reader, "query($i: String!) { transaction(id: $i) { ok } }", i=result["txId"]
        )
        if found["data"]["transaction"] is not None or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert found["data"]["transaction"] == {"ok": True}
    # typed errors for bad bytes, never a stack trace
    for envelope, code in (
        ("%%%", "MALFORMED"),
        (base64.b64encode(b"junk").decode(), "MALFORMED"),
        (base64.b64encode(raw[:-1] + bytes([raw[-1] ^ 1])).decode(), "BAD_SIGNATURE"),
    ):
        _, body = gql(client, writer, q, e=envelope)
        assert body["data"]["submitTransaction"]["error"]["code"] == code, body


def test_subscription_streams_new_blocks(chain: ChainFixture, client: TestClient) -> None:
    token = chain.tokens.token()
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
        assert ws.receive_json() == {"type": "connection_ack"}
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
        ws.send_json(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": "subscription { newBlock { height hash txCount } }"},
            }
        )
        time.sleep(0.3)  # let the subscription register its starting height
        before = chain.height
        after = chain.add_blocks(2)
        got = [ws.receive_json() for _ in range(after - before)]
        assert [m["payload"]["data"]["newBlock"]["height"] for m in got] == list(
            range(before + 1, after + 1)
        )
        assert all(m["id"] == "1" and m["type"] == "next" for m in got)
        ws.send_json({"id": "1", "type": "complete"})


def test_playground_explorer_health_metrics_jwks(chain: ChainFixture, client: TestClient) -> None:
    page = client.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200
    # GraphiQL where ./dev fetched its files (D39), else the minimal playground
    assert "graphiql" in page.text.lower() or "playground" in page.text.lower()
    assert client.get("/graphql").status_code == 405
    index = client.get("/")
    assert index.status_code == 200 and "explorer" in index.text.lower()
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["height"] >= chain.height - 5
    jwks = client.get("/.well-known/jwks.json").json()
    assert jwks["keys"][0]["kid"] == chain.tokens.ring.current.kid
    gql(client, chain.tokens.token(), "{ summary { height } }")
    text = client.get("/metrics").text
    assert "pantheon_gateway_request_seconds_bucket" in text
    assert 'pantheon_gateway_requests_total{institution="inst-1"' in text


def test_all_permissions_token_works_for_everything(
    chain: ChainFixture, client: TestClient
) -> None:
    token = chain.tokens.token(ALL)
    status, body = gql(client, token, "{ summary { height } me { sub } }")
    assert status == 200 and body["data"]["me"]["sub"] == "u-test"
