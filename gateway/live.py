"""Live updates: one height watcher per app, GraphQL subscriptions over WebSocket.

Theory of operation
-------------------
* :class:`HeightWatcher` is the only poller: one asyncio task reads ``chain.meta``'s height
  every ``interval_s`` (in a worker thread) and wakes every waiter when it moves. Its height
  is also the version of the engine's response cache.
* :func:`serve_websocket` speaks the ``graphql-transport-ws`` protocol: ``connection_init``
  (its payload carries ``{"authorization": "Bearer <jwt>"}`` or ``{"token": ...}``) is
  answered by ``connection_ack`` or a close (4403 refused token, 4408 no init in time); each
  ``subscribe`` is prepared by the engine exactly like an HTTP query (limits, validation,
  permissions; a refusal is an ``error`` message), then receives one ``next`` per new final
  block, in height order (at most ``BACKLOG`` blocks when it fell behind), until ``complete``.
  The token is re-checked for expiry before every push; when it expires the socket is closed
  with 4401. It is also verified again before every push (the app's token cache makes that
  one revocation query per token per second): a revoked token, or a disabled user, closes
  the socket with 4403, and a subscription whose permission was revoked (D24) ends with an
  ``error`` message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.auth.tokens import Claims
from gateway.authn import Authenticator, authenticate, bearer_token
from gateway.engine import Engine, Prepared
from gateway.errors import GatewayError, Unauthenticated, error_body
from gateway.metrics import GatewayMetrics
from projections import read
from projections.read import queries

log = logging.getLogger("pantheon.gateway.live")
PROTOCOL = "graphql-transport-ws"
BACKLOG = 20
INIT_TIMEOUT_S = 10.0


class HeightWatcher:
    """Polls the projected height; waiters wake when it moves."""

    def __init__(self, pool: ConnectionPool[Any], interval_s: float = 0.25) -> None:
        self.pool = pool
        self.interval_s = interval_s
        self.height: int | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def read(self) -> int | None:
        """The projected height now (a query; the poller's value may lag)."""
        with self.pool.connection() as conn:
            return queries.chain_height(conn)

    async def poll_once(self) -> None:
        try:
            height = await run_in_threadpool(self.read)
        except Exception as exc:  # database down: keep the last height, try again
            log.warning("height poll failed", extra={"error": type(exc).__name__})
            return
        if height != self.height:
            self.height = height
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def _loop(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait_above(self, height: int) -> int:
        """Wait until the height exceeds ``height``; returns the new height."""
        while self.height is None or self.height <= height:
            await self._changed.wait()
        return self.height


def _blocks(engine: Engine, first: int, last: int) -> list[read.Block]:
    with engine.services.pool.connection() as conn:
        rows = read.latest_blocks(conn, limit=last - first + 1, before_height=last + 1)
    return sorted(rows, key=lambda b: b.height)


class Session:
    """One WebSocket connection and its subscriptions."""

    def __init__(
        self,
        ws: WebSocket,
        engine: Engine,
        watcher: HeightWatcher,
        metrics: GatewayMetrics,
        verify: Callable[[str], Claims],
        *,
        default: Claims | None = None,
    ) -> None:
        self.ws, self.engine, self.watcher, self.metrics = ws, engine, watcher, metrics
        self.verify = verify
        self.claims: Claims | None = default  # without a token (anonymous where chain is public)
        self.token: str | None = None
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_text(json.dumps(message, separators=(",", ":")))

    async def init(self) -> bool:
        try:
            first = await asyncio.wait_for(self.ws.receive_json(), INIT_TIMEOUT_S)
        except (TimeoutError, json.JSONDecodeError, KeyError):
            await self.ws.close(4408, "connection_init expected")
            return False
        if not isinstance(first, dict) or first.get("type") != "connection_init":
            await self.ws.close(4400, "connection_init expected")
            return False
        payload = first.get("payload") or {}
        try:
            token = payload.get("token") or bearer_token(payload.get("authorization"))
            if token:
                self.claims = await run_in_threadpool(self.verify, token)
                self.token = token
        except (GatewayError, AttributeError) as exc:
            reason = exc.extra.get("reason", "malformed") if isinstance(exc, GatewayError) else ""
            self.metrics.auth_failures.labels(self.metrics.institution, reason).inc()
            await self.ws.close(4403, f"forbidden: {reason}")
            return False
        await self.send({"type": "connection_ack"})
        return True

    async def handle(self, message: Any) -> bool:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "ping":
            await self.send({"type": "pong"})
        elif kind == "pong":
            pass
        elif kind == "subscribe":
            await self.subscribe(message)
        elif kind == "complete":
            task = self.tasks.pop(str(message.get("id")), None)
            if task is not None:
                task.cancel()
        else:
            await self.ws.close(4400, f"unexpected message {kind!r}")
            return False
        return True

    async def subscribe(self, message: dict[str, Any]) -> None:
        sid = str(message.get("id", ""))
        if not sid or sid in self.tasks:
            await self.ws.close(4409, f"subscriber for {sid} already exists")
            return
        payload = message.get("payload") or {}
        try:
            prepared = self.engine.prepare(
                payload.get("query"),
                payload.get("variables"),
                payload.get("operationName"),
                self.claims,
                transport="ws",
            )
        except GatewayError as exc:
            await self.send({"type": "error", "id": sid, "payload": error_body([exc])["errors"]})
            return
        self.tasks[sid] = asyncio.create_task(self.stream(sid, prepared))

    async def stream(self, sid: str, prepared: Prepared) -> None:
        self.metrics.subscribers.inc()
        try:
            seen = await run_in_threadpool(self.watcher.read) or 0
            while True:
                height = await self.watcher.wait_above(seen)
                if self.claims is not None and self.claims.exp <= time.time():
                    await self.ws.close(4401, "token expired")
                    return
                if not await self.reverified():
                    return
                try:  # the permissions it needs, against the token's current ones
                    self.engine.prepare(
                        prepared.query,
                        prepared.variables,
                        prepared.operation_name,
                        self.claims,
                        transport="ws",
                    )
                except GatewayError as exc:
                    errors = error_body([exc])["errors"]
                    await self.send({"type": "error", "id": sid, "payload": errors})
                    return
                first = max(seen + 1, height - BACKLOG + 1)
                blocks = await run_in_threadpool(_blocks, self.engine, first, height)
                for block in blocks:
                    body = await run_in_threadpool(
                        self.engine.run, prepared, self.claims, "", block
                    )
                    await self.send({"id": sid, "type": "next", "payload": body})
                seen = height
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            self.metrics.subscribers.dec()

    async def reverified(self) -> bool:
        """Verify the session's token again; a refused one closes the socket (4403)."""
        if self.token is None:
            return True
        try:
            self.claims = await run_in_threadpool(self.verify, self.token)
        except GatewayError as exc:
            reason = exc.extra.get("reason", "revoked")
            self.metrics.auth_failures.labels(self.metrics.institution, reason).inc()
            await self.ws.close(4403, f"forbidden: {reason}")
            return False
        return True

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        for task in self.tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def serve_websocket(
    ws: WebSocket,
    engine: Engine,
    watcher: HeightWatcher,
    metrics: GatewayMetrics,
    authenticator: Authenticator,
    *,
    default: Claims | None = None,
) -> None:
    """Serve one graphql-transport-ws connection until it closes (``default``: the claims of
    a connection without a token)."""
    if PROTOCOL not in ws.scope.get("subprotocols", []):
        await ws.close(4406, f"subprotocol {PROTOCOL} required")
        return
    await ws.accept(subprotocol=PROTOCOL)
    institution = engine.services.institution

    def verify(token: str) -> Claims:
        return authenticate(authenticator, token, institution)

    session = Session(ws, engine, watcher, metrics, verify, default=default)
    if not await session.init():
        return
    try:
        while True:
            try:
                message = await ws.receive_json()
            except json.JSONDecodeError:
                await ws.close(4400, "invalid JSON")
                return
            if not await session.handle(message):
                return
    except WebSocketDisconnect:
        pass
    except Unauthenticated:
        await ws.close(4403, "forbidden")
    finally:
        await session.close()
