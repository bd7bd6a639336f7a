"""What the local explorer forwards (decisions D55): public chain reads only, within limits.

The remote side is a raw socket server on loopback that answers as told (slowly, a
trickle, a redirect), so the deadlines and refusals are checked on real connections.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.errors import BodyTooLarge, GatewayError, ParseFailed
from gateway.limits import Limits
from infra.explorer import listen, read_token
from infra.explorer_forward import (
    PUBLIC_FIELDS,
    BadGateway,
    ExplorerError,
    ForwardLimits,
    GatewayTimeout,
    NotForwarded,
    RemoteGateway,
    public_request,
)
from infra.explorer_live import upstream_message, ws_url

LIMITS = Limits()


def forwarded(body: object) -> dict[str, object]:
    out: dict[str, object] = json.loads(public_request(json.dumps(body).encode(), LIMITS))
    return out


def test_public_reads_are_forwarded_with_only_the_graphql_keys() -> None:
    body = {
        "query": "query Q($h: Int) { block(height: $h) { ...B } __typename }"
        " fragment B on Block { height hash }",
        "variables": {"h": 3},
        "operationName": "Q",
        "extensions": {"persistedQuery": "x"},
    }
    assert forwarded(body) == {k: body[k] for k in ("query", "variables", "operationName")}
    assert forwarded({"query": "{ summary { height } }"})["variables"] == {}
    assert forwarded({"query": "{ __schema { types { name } } }"})
    assert "me" not in PUBLIC_FIELDS and {"blocks", "keySetTransactions"} <= PUBLIC_FIELDS


@pytest.mark.parametrize(
    ("body", "error", "words"),
    [
        (
            {"query": 'mutation { login(username: "a", password: "b") { token } }'},
            NotForwarded,
            "mutation",
        ),
        ({"query": "subscription { newBlock { height } }"}, NotForwarded, "subscription"),
        ({"query": "{ me { sub } }"}, NotForwarded, "me is not public"),
        ({"query": "{ ...M } fragment M on Query { me { sub } }"}, NotForwarded, "fragments"),
        ({"query": "{ ... on Query { summary { height } } }"}, NotForwarded, "fragments"),
        ({"query": "type T { a: Int }"}, NotForwarded, "only queries"),
        ({"query": "{ summary "}, ParseFailed, "syntax error"),
        ({"query": "{ " + "s{h} " * 1300 + "}"}, ParseFailed, "tokens"),
        ({"query": "{ summary { height } }", "variables": [1]}, NotForwarded, "variables"),
        ({"query": 7}, NotForwarded, "not a GraphQL request"),
        ([1, 2], NotForwarded, "not a GraphQL request"),
    ],
)
def test_anything_else_is_refused(body: object, error: type[GatewayError], words: str) -> None:
    with pytest.raises(error, match=words):
        forwarded(body)


def test_bodies_above_the_limit_or_not_json_are_refused() -> None:
    with pytest.raises(BodyTooLarge):
        public_request(b" " * (LIMITS.max_body_bytes + 1), LIMITS)
    with pytest.raises(NotForwarded, match="not JSON"):
        public_request(b"query=1", LIMITS)


@pytest.mark.parametrize("url", ["ftp://host", "host:4004", "http://", "file:///etc/passwd"])
def test_a_gateway_address_must_be_http(url: str) -> None:
    with pytest.raises(ExplorerError, match="http"):
        RemoteGateway(url)


@contextmanager
def answering(
    respond: Callable[[socket.socket], None], seen: list[bytes] | None = None
) -> Iterator[str]:
    """A loopback server whose every connection is handed to ``respond`` (each request's
    first bytes appended to ``seen``)."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                request = conn.recv(65536)
                if seen is not None:
                    seen.append(request)
                respond(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        server.close()


QUICK = ForwardLimits(timeout_s=0.5)
READ = b'{"query": "{ summary { height } }"}'


def test_a_silent_gateway_times_out() -> None:
    with answering(lambda _conn: time.sleep(1.5)) as url, pytest.raises(GatewayTimeout):
        RemoteGateway(url, limits=QUICK).graphql(READ)


def test_a_trickling_answer_is_cut_at_the_deadline() -> None:
    def trickle(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        conn.sendall(b"Content-Length: 1000\r\n\r\n")
        for _ in range(30):
            try:
                conn.sendall(b" ")
            except OSError:
                return
            time.sleep(0.1)

    with answering(trickle) as url:
        began = time.monotonic()
        with pytest.raises(GatewayTimeout):
            RemoteGateway(url, limits=QUICK).graphql(READ)
        assert time.monotonic() - began < 2.5  # the whole answer's deadline, not per read


def test_redirects_are_not_followed_and_garbage_is_a_bad_gateway() -> None:
    redirect = b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/\r\nContent-Length: 0\r\n\r\n"
    with answering(lambda conn: conn.sendall(redirect)) as url:
        with pytest.raises(BadGateway, match="HTTP 302"):
            RemoteGateway(url, limits=QUICK).graphql(READ)
        with pytest.raises(ExplorerError, match=f"the gateway at {url} answered HTTP 302"):
            RemoteGateway(url, limits=QUICK).probe()
    html = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 6\r\n\r\n<html>"
    garbage = r"answered HTTP 200 \(text/html\), not GraphQL"
    with (
        answering(lambda conn: conn.sendall(html)) as url,
        pytest.raises(ExplorerError, match=garbage),
    ):
        RemoteGateway(url, limits=QUICK).probe()


def test_socket_messages_are_rebuilt_with_the_commands_token_only() -> None:
    init = {"type": "connection_init", "payload": {"token": "the page's"}}
    assert json.loads(upstream_message(json.dumps(init), None, LIMITS)) == {
        "type": "connection_init",
        "payload": {"token": ""},
    }
    assert json.loads(upstream_message(json.dumps(init), "t0", LIMITS))["payload"] == {
        "token": "t0"
    }
    sub = {
        "id": 7,
        "type": "subscribe",
        "payload": {"query": "subscription { newBlock { height } }", "x": 1},
    }
    assert json.loads(upstream_message(json.dumps(sub), None, LIMITS)) == {
        "id": "7",
        "type": "subscribe",
        "payload": {"query": sub["payload"]["query"], "variables": {}},  # type: ignore[index]
    }
    assert json.loads(upstream_message('{"type": "pong", "extra": 1}', None, LIMITS)) == {
        "type": "pong"
    }
    for refused in (
        '{"id": "1", "type": "subscribe", "payload": {"query": "{ summary { height } }"}}',
        '{"id": "1", "type": "subscribe", "payload": "subscription { newBlock { height } }"}',
        '{"type": "connection_terminate"}',
        "[]",
        "ping",
    ):
        with pytest.raises(NotForwarded):
            upstream_message(refused, None, LIMITS)
    assert ws_url("https://h:1/base") == "wss://h:1/base/graphql"


def test_a_taken_port_is_one_typed_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ExplorerError, match=f"cannot listen on 127.0.0.1:{port}: Address"):
            listen("127.0.0.1", port)


JSON_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def test_an_object_proof_carries_the_commands_token_to_its_gateway_only() -> None:
    seen: list[bytes] = []
    with answering(lambda conn: conn.sendall(JSON_OK), seen) as url:
        with pytest.raises(NotForwarded, match="--token-file"):
            RemoteGateway(url, limits=QUICK).object_proof("report")
        for bad in ("a/b", "", "x" * 129, "a\nb"):
            with pytest.raises(NotForwarded, match="data id"):
                RemoteGateway(url, token="t0k", limits=QUICK).object_proof(bad)
        assert seen == []  # refused here: nothing reached the gateway
        remote = RemoteGateway(url + "/base/", token="t0k", limits=QUICK)
        assert remote.object_proof("q3 report?#") == (200, {})
    head = seen[0].split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"GET /base/objects/q3%20report%3F%23/proof HTTP/1.1"
    assert b"Authorization: Bearer t0k" in head
    assert f"Host: {url.removeprefix('http://')}".encode() in head
    assert not any(line.lower().startswith(b"cookie") for line in head)


def test_an_object_proofs_redirect_is_not_followed_nor_a_page_passed_back() -> None:
    seen: list[bytes] = []
    redirect = b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n"
    with (
        answering(lambda conn: conn.sendall(redirect), seen) as url,
        pytest.raises(BadGateway, match="HTTP 302"),
    ):
        RemoteGateway(url, token="t0k", limits=QUICK).object_proof("report")
    assert len(seen) == 1  # followed, the token would have gone to /elsewhere too
    html = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 6\r\n\r\n<html>"
    with (
        answering(lambda conn: conn.sendall(html)) as url,
        pytest.raises(BadGateway, match=r"HTTP 200 \(text/html\), not JSON"),
    ):
        RemoteGateway(url, token="t0k", limits=QUICK).object_proof("report")


def test_a_token_file_holds_one_header_safe_line(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.write_text("eyJhbGciOi.payload.sig\n")
    assert read_token(str(good)) == "eyJhbGciOi.payload.sig"
    for text in ("", "\n", "one\nX-Injected: yes", "two words", "caf\u00e9"):
        bad = tmp_path / "bad"
        bad.write_text(text)
        with pytest.raises(ExplorerError, match="not a token"):
            read_token(str(bad))
