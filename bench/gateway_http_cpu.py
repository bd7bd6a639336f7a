"""CPU per request of the gateway's HTTP path alone, in one process, without a socket.

The dashboard query goes through the whole gateway as ``pantheon gateway`` serves it --
uvicorn's protocol with the head deadline (:mod:`gateway.serving`), the Starlette app, the
``POST /graphql`` endpoint, the token cache, :meth:`Engine.prepare` (limits, permissions),
the hand-off to the query threads, JSON encoding and the metrics -- except the parts that
need other processes: the query's execution is replaced by its recorded result (no SQL),
and the transport is an in-memory stand-in that counts ``write`` calls (no kernel). The
figure is the process's CPU time per request (``time.process_time``), which depends much
less on what else runs on the machine than ``bench.gateway``'s (decisions D50).

    python -m bench.gateway_http_cpu [--requests 20000] [--plain-http] [--repeat 3]

``--plain-http`` serves with uvicorn's own httptools protocol and the default collector
settings, as before D50, to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from bench.gateway import QUERY
from gateway.app import GatewayConfig, create_app
from gateway.auth.tokens import Claims
from gateway.context import Services
from harness.gateway_support import RecordingTransport

TOKEN = "t" * 300  # the cache is keyed by the token's text; its form does not matter here
CLAIMS = Claims(
    iss="bench",
    aud="bench",
    sub="u",
    inst="inst-a",
    groups=(),
    perms=frozenset({"chain:read"}),
    iat=0,
    nbf=0,
    exp=2**40,
    jti="j",
    kid="k",
)
RESULT: dict[str, Any] = {  # the dashboard's shape: a summary, 15 blocks, 15 transactions
    "data": {
        "summary": {
            "chainId": "bench",
            "height": 207,
            "txCount": 2000,
            "okCount": 2000,
            "institutionCount": 4,
            "recentTps": 51.2,
        },
        "blocks": {
            "edges": [
                {
                    "node": {
                        "height": 207 - i,
                        "hash": "ab" * 32,
                        "txCount": 10,
                        "okCount": 10,
                        "timestamp": 1_796_000_000_000 + i,
                    }
                }
                for i in range(15)
            ]
        },
        "transactions": {
            "edges": [
                {
                    "node": {
                        "txId": "cd" * 32,
                        "height": 207,
                        "position": i,
                        "result": "OK",
                        "sender": "ef" * 16,
                        "operation": "anchor",
                    }
                }
                for i in range(15)
            ]
        },
    }
}


class Verifier:
    def verify(self, token: str) -> Claims:
        return CLAIMS


class Transport(RecordingTransport):
    """Counts writes, bytes and responses instead of keeping them."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.bytes = 0
        self.responses = 0

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.count += 1
        self.bytes += len(data)
        self.responses += data.count(b"HTTP/1.1 200 OK")


def request_bytes() -> bytes:
    body = json.dumps({"query": QUERY}).encode()
    head = (
        f"POST /graphql HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {TOKEN}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def drive(protocol_class: Any, app: Any, requests: int, connections: int) -> Transport:
    config = Config(app, log_level="critical", lifespan="off", proxy_headers=False)
    config.load()
    loop = asyncio.get_running_loop()
    transport = Transport()
    state = ServerState()
    protocols = []
    for _ in range(connections):
        protocol = protocol_class(config=config, server_state=state, app_state={}, _loop=loop)
        protocol.connection_made(transport)
        protocols.append(protocol)
    data = request_bytes()
    sent = 0
    while sent < requests:
        for protocol in protocols:  # one request in flight per connection, as a client
            protocol.data_received(data)
        sent += connections
        while transport.responses < sent:
            assert not transport.closed, "the connection was closed"
            await asyncio.sleep(0)
    for protocol in protocols:
        protocol.connection_lost(None)
    return transport


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--plain-http", action="store_true")
    args = p.parse_args()
    config = GatewayConfig(institution=CLAIMS.inst, cache_responses=False)
    services = Services(institution=CLAIMS.inst, pool=None)  # type: ignore[arg-type]
    app = create_app(config, services, Verifier())
    gw = app.state.gateway
    gw.engine.run = lambda *_args, **_kw: RESULT  # the recorded result instead of SQL
    protocol_class: Any = HttpToolsProtocol
    if not args.plain_http:
        from gateway.serving import GatewayProtocol, settle_heap  # noqa: PLC0415

        protocol_class = GatewayProtocol
        settle_heap()
    import uvloop  # noqa: PLC0415

    for i in range(args.repeat + 1):  # the first round warms the caches
        collections = sum(s["collections"] for s in gc.get_stats())
        cpu = time.process_time()
        transport = uvloop.run(drive(protocol_class, app, args.requests, args.connections))
        cpu = time.process_time() - cpu
        collections = sum(s["collections"] for s in gc.get_stats()) - collections
        n = transport.responses
        if i == 0:
            continue
        print(
            f"gateway HTTP path: {1e3 * cpu / n:.3f} ms CPU/request, "
            f"{transport.count / n:.2f} writes/response, {transport.bytes / n:.0f} bytes, "
            f"{collections / n:.3f} collections/request "
            f"({n} requests, {'plain uvicorn' if args.plain_http else 'GatewayProtocol'})"
        )


if __name__ == "__main__":
    main()
