"""Live blocks for the local explorer (D55): the page's ``newBlock`` subscription, relayed.

The page subscribes over ``graphql-transport-ws`` (``gateway/static/api.js``). The local
server accepts the socket, opens one to the remote gateway's ``/graphql`` and relays:

* page to gateway: ``connection_init`` with its payload replaced (the token given with
  ``--token-file``, or none: never the page's), ``subscribe`` whose query is a subscription
  to ``newBlock`` only (:func:`~infra.explorer_forward.public_subscription`), ``complete``,
  ``ping`` and ``pong``, each re-serialized with only the keys the protocol needs; anything
  else (another subscription, a binary or oversize message) closes the socket with 4400.
* gateway to page: text messages of at most 64 KiB, as they are (a new-block message only
  makes the page reload a list; any block it shows is checked against the pin). The
  gateway's own close code in 4000-4999 (4401, 4403: the page stops retrying) is passed on.

A socket opened by another site's page (its ``Origin`` is not this server: browsers let any
page open a socket to loopback) is refused at the handshake (403). A gateway that cannot be
reached closes the page's socket with 1011; the page retries with its backoff (at most every
10 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any
from urllib.parse import urlsplit

from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Subprotocol

from gateway.limits import Limits
from infra.explorer_forward import NotForwarded, RemoteGateway, public_subscription

PROTOCOL = "graphql-transport-ws"
MAX_MESSAGE = 64 * 1024


def ws_url(base: str) -> str:
    """The gateway's subscription address for its base address ``http(s)://host:port``."""
    scheme, rest = base.split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/graphql"


def upstream_message(text: str, token: str | None, limits: Limits) -> str:
    """The message to send the gateway for the page's ``text``, or :class:`NotForwarded`."""
    try:
        message = json.loads(text)
    except ValueError:
        raise NotForwarded("a message that is not JSON") from None
    if not isinstance(message, dict):
        raise NotForwarded("a message that is not an object")
    kind = message.get("type")
    out: dict[str, Any] = {"type": kind}
    if "id" in message:
        out["id"] = str(message["id"])
    if kind == "connection_init":
        out["payload"] = {"token": token or ""}
    elif kind == "subscribe":
        payload = message.get("payload")
        variables = payload.get("variables") if isinstance(payload, dict) else None
        if not isinstance(payload, dict) or not isinstance(variables, dict | None):
            raise NotForwarded("a subscribe message without a GraphQL payload")
        query = public_subscription(payload.get("query"), limits)
        out["payload"] = {"query": query, "variables": variables or {}}
    elif kind not in ("complete", "ping", "pong"):
        raise NotForwarded(f"message type {kind!r} is not relayed")
    return json.dumps(out)


async def relay(ws: WebSocket, remote: RemoteGateway) -> None:
    """Relay the page's socket ``ws`` to the gateway until either side closes it."""
    origin = ws.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != ws.headers.get("host"):
        await ws.close(4403)  # another site's page: the handshake is refused (HTTP 403)
        return
    await ws.accept(subprotocol=PROTOCOL)
    try:
        async with connect(
            ws_url(remote.url),
            subprotocols=[Subprotocol(PROTOCOL)],
            max_size=MAX_MESSAGE,
            open_timeout=remote.limits.timeout_s,
            compression=None,
        ) as upstream:
            code = await _pump(ws, upstream, remote)
    except (OSError, TimeoutError, WebSocketException):
        code = 1011
    with contextlib.suppress(RuntimeError):  # the page may have gone already
        await ws.close(code)


async def _pump(ws: WebSocket, upstream: ClientConnection, remote: RemoteGateway) -> int:
    async def down() -> None:
        async for message in upstream:
            if isinstance(message, str):
                await ws.send_text(message)

    async def up() -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            text = message.get("text")
            if text is None or len(text) > MAX_MESSAGE:
                raise NotForwarded("a binary or oversize message")
            await upstream.send(upstream_message(text, remote.token, remote.limits.request))

    tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    failure = next(iter(done)).exception()
    if isinstance(failure, NotForwarded):
        return 4400
    if failure is not None and not isinstance(failure, WebSocketDisconnect | ConnectionClosed):
        raise failure
    closed = upstream.close_code or 1000
    return closed if 4000 <= closed < 5000 else 1000
