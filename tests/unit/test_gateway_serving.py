"""gateway.serving: a response in one write, the head deadline kept, a settled heap."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from gateway.serving import GEN0_THRESHOLD, CoalescingCycle, GatewayProtocol, settle_heap
from harness.gateway_support import RecordingTransport

Send = Callable[[dict[str, Any]], Any]


def app_sending(*messages: dict[str, Any]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        for message in messages:
            await send(message)

    return app


HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"11")]
START: dict[str, Any] = {"type": "http.response.start", "status": 200, "headers": HEADERS}
PAYLOAD = b'{"data":1}\n'
BODY: dict[str, Any] = {"type": "http.response.body", "body": PAYLOAD}
REQUEST = b"POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def serve(
    loop: asyncio.AbstractEventLoop, app: Any, data: bytes, head_timeout_s: float = 10.0
) -> tuple[RecordingTransport, GatewayProtocol]:
    config = Config(app, log_level="critical", lifespan="off", proxy_headers=False)
    config.load()
    protocol_class = GatewayProtocol.with_timeout(head_timeout_s)
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    assert isinstance(protocol, GatewayProtocol)
    transport = RecordingTransport()

    async def drive() -> None:
        protocol.connection_made(transport)  # type: ignore[arg-type]
        protocol.data_received(data)
        for _ in range(50):
            await asyncio.sleep(0)
        for task in list(protocol.tasks):
            await task

    loop.run_until_complete(drive())
    return transport, protocol


def test_head_and_body_go_out_in_one_write(loop: asyncio.AbstractEventLoop) -> None:
    transport, protocol = serve(loop, app_sending(START, BODY), REQUEST)
    assert len(transport.writes) == 1
    response = transport.writes[0]
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 11\r\n" in response
    assert response.endswith(b"\r\n\r\n" + PAYLOAD)
    assert isinstance(protocol.cycle, CoalescingCycle)
    assert not transport.closed  # keep-alive


def test_two_requests_on_one_connection_each_one_write(loop: asyncio.AbstractEventLoop) -> None:
    transport, _ = serve(loop, app_sending(START, BODY), REQUEST + REQUEST)
    assert len(transport.writes) == 2
    assert all(w.startswith(b"HTTP/1.1 200 OK") for w in transport.writes)


def test_streamed_body_writes_later_chunks_as_they_come(loop: asyncio.AbstractEventLoop) -> None:
    start = {"type": "http.response.start", "status": 200, "headers": []}  # chunked
    parts: list[dict[str, Any]] = [
        {"type": "http.response.body", "body": b"ab", "more_body": True},
        {"type": "http.response.body", "body": b"cd", "more_body": True},
        {"type": "http.response.body", "body": b""},
    ]
    transport, _ = serve(loop, app_sending(start, *parts), REQUEST)
    assert len(transport.writes) == 3
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK")
    assert b"transfer-encoding: chunked" in transport.writes[0]
    assert transport.writes[0].endswith(b"\r\n\r\n2\r\nab\r\n")
    assert transport.writes[1:] == [b"2\r\ncd\r\n", b"0\r\n\r\n"]


def test_connection_close_writes_then_closes(loop: asyncio.AbstractEventLoop) -> None:
    start = {**START, "headers": [*HEADERS, (b"connection", b"close")]}
    transport, _ = serve(loop, app_sending(start, BODY), REQUEST)
    assert len(transport.writes) == 1
    assert transport.writes[0].endswith(PAYLOAD)
    assert transport.closed


def test_head_request_writes_the_head(loop: asyncio.AbstractEventLoop) -> None:
    head_request = b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n"
    transport, _ = serve(loop, app_sending(START, BODY), head_request)
    assert len(transport.writes) == 1
    assert transport.writes[0].endswith(b"content-length: 11\r\n\r\n")


def test_expect_100_continue_is_not_held(loop: asyncio.AbstractEventLoop) -> None:
    request = (
        b"POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n"
    )
    seen: list[list[bytes]] = []
    transport_box: list[RecordingTransport] = []

    async def app(scope: dict[str, Any], receive: Any, send: Send) -> None:
        receiving = asyncio.ensure_future(receive())
        await asyncio.sleep(0)
        seen.append(list(transport_box[0].writes))  # the 100 went out before the body came
        receiving.cancel()

    config = Config(app, log_level="critical", lifespan="off", proxy_headers=False)
    config.load()
    protocol = GatewayProtocol(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    transport = RecordingTransport()
    transport_box.append(transport)

    async def drive() -> None:
        protocol.connection_made(transport)  # type: ignore[arg-type]
        protocol.data_received(request)
        for task in list(protocol.tasks):
            await task

    loop.run_until_complete(drive())
    assert seen == [[b"HTTP/1.1 100 Continue\r\n\r\n"]]


def test_an_app_error_before_the_body_still_answers_500(loop: asyncio.AbstractEventLoop) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Send) -> None:
        await receive()
        raise RuntimeError("boom")

    transport, _ = serve(loop, app, REQUEST)
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 500 Internal Server Error")
    assert transport.writes[0].endswith(b"Internal Server Error")
    assert transport.closed


def test_a_slow_head_still_gets_408(loop: asyncio.AbstractEventLoop) -> None:
    async def never(scope: dict[str, Any], receive: Any, send: Send) -> None:
        raise AssertionError("no request should reach the app")

    config = Config(never, log_level="critical", lifespan="off", proxy_headers=False)
    config.load()
    protocol = GatewayProtocol.with_timeout(0.05)(
        config=config, server_state=ServerState(), app_state={}, _loop=loop
    )
    transport = RecordingTransport()

    async def drive() -> None:
        protocol.connection_made(transport)  # type: ignore[arg-type]
        protocol.data_received(b"POST /graphql HTTP/1.1\r\nhost")
        await asyncio.sleep(0.2)

    loop.run_until_complete(drive())
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 408 Request Timeout")
    assert transport.closed


def test_settle_heap_freezes_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_threshold() == (GEN0_THRESHOLD, before[1], before[2])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
