"""The local explorer (decisions D55): this installation's code, a remote gateway's data.

A real gateway (uvicorn, over a chain projected by the real pipeline) serves a tampered
``trust.js``; the local explorer in front of it serves the package's own files, forwards the
public chain reads, the genesis and the new-block subscription, refuses everything else,
and fails to start in one line when the gateway is unreachable or answers something that is
not GraphQL.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect
from websockets.typing import Origin, Subprotocol

from harness.gateway_support import ChainFixture
from infra import cli
from infra.explorer import STATIC, create_app
from infra.explorer_forward import ForwardLimits, RemoteGateway
from tests.browser.explorer_site import Served

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TAMPERED = b"/* served by a hostile gateway */ const Trust = { verify: () => 'VERIFIED' };\n"


@pytest.fixture(scope="module")
def hostile(chain: ChainFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real gateway, public chain, whose static files include a tampered ``trust.js``."""
    static = tmp_path_factory.mktemp("hostile") / "static"
    shutil.copytree(STATIC, static, ignore=shutil.ignore_patterns("vendor"))
    (static / "trust.js").write_bytes(TAMPERED)
    served = Served(
        chain.app(public_chain=True, genesis_file=chain.sim.genesis_path, static_dir=static)
    )
    yield served.url
    served.stop()


@pytest.fixture(scope="module")
def private(chain: ChainFixture) -> Iterator[str]:
    served = Served(chain.app())
    yield served.url
    served.stop()


def _local(remote: RemoteGateway) -> Served:
    return Served(create_app(remote))


@pytest.fixture(scope="module")
def local(hostile: str) -> Iterator[str]:
    served = _local(RemoteGateway(hostile))
    yield served.url
    served.stop()


def post(url: str, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(url + "/graphql", json=body, headers=headers, timeout=30)


def code(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["extensions"]["code"])


def test_static_files_come_from_this_installation(local: str, hostile: str) -> None:
    assert httpx.get(hostile + "/static/trust.js").content == TAMPERED
    ours = httpx.get(local + "/static/trust.js")
    assert ours.status_code == 200
    assert ours.content == (STATIC / "trust.js").read_bytes() != TAMPERED
    for path, name in (("/", "index.html"), ("/static/explorer.js", "explorer.js")):
        assert httpx.get(local + path).content == (STATIC / name).read_bytes()


def test_public_reads_and_the_genesis_are_forwarded(local: str, chain: ChainFixture) -> None:
    r = post(local, {"query": "{ summary { height } }"})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["summary"]["height"] >= chain.height
    query = "query($h: Int!) { block(height: $h) { height hash } }"
    r = post(local, {"query": query, "variables": {"h": 3}, "operationName": None})
    assert r.json()["data"]["block"]["height"] == 3
    genesis = httpx.get(local + "/genesis.avro")
    assert genesis.status_code == 200
    assert genesis.content == Path(chain.sim.genesis_path).read_bytes()
    assert "set-cookie" not in genesis.headers


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('mutation { login(username: "ada", password: "pw") { token } }', "NOT_FORWARDED"),
        ("{ me { sub } }", "NOT_FORWARDED"),
        ("{ summary { height } me { sub } }", "NOT_FORWARDED"),
        ("subscription { newBlock { height } }", "NOT_FORWARDED"),
        ("{ ... on Query { me { sub } } }", "NOT_FORWARDED"),
        ("{ summary { height ", "GRAPHQL_PARSE_FAILED"),
    ],
)
def test_anything_but_a_public_read_is_refused(local: str, query: str, expected: str) -> None:
    r = post(local, {"query": query})
    assert (r.status_code, code(r)) == (400 if "PARSE" in expected else 403, expected), r.text


def test_oversize_foreign_and_cross_site_requests_are_refused(local: str) -> None:
    big = {"query": "{ summary { height } }", "variables": {"pad": "x" * 40_000}}
    r = post(local, big)
    assert (r.status_code, code(r)) == (413, "BODY_TOO_LARGE")
    form = httpx.post(local + "/graphql", content=b'{"query": "{ summary { height } }"}')
    assert form.status_code == 415  # no application/json: a cross-site form could send it
    rebound = post(local, {"query": "{ summary { height } }"}, Host="evil.example")
    assert rebound.status_code == 400  # DNS rebinding: the Host is not this server
    proof = httpx.get(local + "/objects/x/proof")  # no --token-file: said, not forwarded
    assert (proof.status_code, code(proof)) == (403, "NOT_FORWARDED")
    assert httpx.get(local + "/objects/x").status_code == 404
    assert httpx.get(local + "/metrics").status_code == 404


def test_a_trickled_body_is_cut_at_the_deadline(hostile: str) -> None:
    served = Served(create_app(RemoteGateway(hostile), body_timeout_s=1.0))
    try:
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as conn:
            conn.sendall(
                b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
            )
            answer = b""
            while chunk := conn.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"REQUEST_TIMEOUT" in answer
    finally:
        served.stop()


def test_an_oversize_answer_is_a_bad_gateway(hostile: str) -> None:
    served = _local(RemoteGateway(hostile, limits=ForwardLimits(max_answer_bytes=200)))
    try:
        r = post(served.url, {"query": "{ blocks(first: 20) { edges { node { hash } } } }"})
        assert (r.status_code, code(r)) == (502, "BAD_GATEWAY")
        assert "more than 200 bytes" in r.text
    finally:
        served.stop()


def test_the_browser_credentials_are_never_forwarded(private: str, chain: ChainFixture) -> None:
    """Only a token the user gave the command reaches the gateway, not the page's."""
    token = chain.tokens.token()
    read = {"query": "{ summary { height } }"}
    served = _local(RemoteGateway(private))
    try:
        r = post(served.url, read, Authorization=f"Bearer {token}", Cookie="session=1")
        assert (r.status_code, code(r)) == (401, "UNAUTHENTICATED")
    finally:
        served.stop()
    served = _local(RemoteGateway(private, token=token))
    try:
        r = post(served.url, read)
        assert r.status_code == 200 and r.json()["data"]["summary"]["height"] >= 0
    finally:
        served.stop()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_an_unreachable_or_foreign_gateway_is_one_line(
    capsys: pytest.CaptureFixture[str], hostile: str, private: str
) -> None:
    cases = [
        (f"http://127.0.0.1:{_closed_port()}", "cannot be reached: [Errno 111] Connection refused"),
        (hostile + "/static", "answered HTTP 405 (text/plain"),  # a server, not a gateway
        (private, "does not make its chain public (401)"),
    ]
    for url, expected in cases:
        assert cli.main(["explorer", "--gateway", url, "--port", "0"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("pantheon: error: the gateway at "), err
        assert expected in err, err


def _socket(local: str, **kwargs: Any) -> Any:
    return ws_connect(
        local.replace("http://", "ws://") + "/graphql",
        subprotocols=[Subprotocol("graphql-transport-ws")],
        open_timeout=10,
        **kwargs,
    )


def test_new_blocks_are_relayed_without_the_pages_token(local: str, chain: ChainFixture) -> None:
    with _socket(local) as ws:
        # the gateway refuses a bad token rather than reading it as anonymous (D39): the ack
        # shows the page's token was replaced by none
        ws.send(json.dumps({"type": "connection_init", "payload": {"token": "not-a-token"}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        query = "subscription { newBlock { height } }"
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        height = chain.add_blocks(1)
        while True:
            message = json.loads(ws.recv(timeout=30))
            assert message["type"] == "next", message
            if message["payload"]["data"]["newBlock"]["height"] == height:
                break


@pytest.mark.parametrize(
    "message",
    [
        {"id": "1", "type": "subscribe", "payload": {"query": "{ summary { height } }"}},
        {"id": "1", "type": "subscribe", "payload": {"query": "subscription { me { sub } }"}},
        {"type": "connection_terminate"},
    ],
)
def test_other_socket_messages_close_the_socket(local: str, message: dict[str, Any]) -> None:
    with _socket(local) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        ws.send(json.dumps(message))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400


def test_a_socket_from_another_site_is_refused(local: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        _socket(local, origin=Origin("http://evil.example"))
    assert refused.value.response.status_code == 403


def test_the_command_prints_the_address_and_serves_until_interrupted(
    hostile: str, chain: ChainFixture
) -> None:
    genesis = chain.sim.genesis.hash().hex()
    argv = [sys.executable, "-m", "infra.cli", "explorer", "--gateway", hostile, "--port", "0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [*argv, "--genesis", genesis], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    ) as process:
        _check_served(process, hostile, genesis)


def _check_served(process: subprocess.Popen[str], hostile: str, genesis: str) -> None:
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        assert f"reading public chain data from {hostile} (height " in lines[1], lines
        url = lines[2].strip()
        assert re.fullmatch(rf"http://127\.0\.0\.1:\d+/#genesis={genesis}", url), lines
        base = url.split("#")[0].rstrip("/")
        assert httpx.get(base + "/static/trust.js").content == (STATIC / "trust.js").read_bytes()
        assert post(base, {"query": "{ summary { height } }"}).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 130  # interrupted (D36), after a clean shutdown
