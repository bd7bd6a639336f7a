"""``POST /graphql``: a GraphQL request over HTTP, as a plain ASGI endpoint.

Theory of operation
-------------------
The endpoint reads the body straight from ASGI ``receive`` (refusing it past
``max_body_bytes``, from the declared length or as it arrives), authenticates the bearer
token (a verification cached by :class:`~gateway.authn.CachingAuthenticator`; expiry checked
on every use), prepares the operation (:meth:`gateway.engine.Engine.prepare`: limits and
permissions checked on every request), serves it from the per-height response cache or runs
it on the gateway's query threads, and answers with two ASGI messages (which
:class:`gateway.serving.GatewayProtocol` writes at once). It is an ASGI app rather than a
Starlette request handler: a ``Request``, a ``Response`` and the handler wrapper cost a
measurable part of an uncached request (decisions D50) and give it nothing it needs.
A refusal is a :class:`~gateway.errors.GatewayError` answered with its status and GraphQL
error body; anything else propagates to Starlette's error middleware (500).
"""

from __future__ import annotations

import asyncio
import json
import time
from functools import partial
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope, Send

from gateway.auth.tokens import Claims
from gateway.authn import anonymous, authenticate, bearer_token
from gateway.engine import encode
from gateway.errors import BadInput, BodyTooLarge, Forbidden, GatewayError, error_body

if TYPE_CHECKING:
    from gateway.app import Gateway

_JSON_HEADERS = [(b"content-type", b"application/json")]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, or :class:`BodyTooLarge` once it exceeds ``limit`` bytes."""
    declared = _header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the request body exceeds {limit} bytes", limit=limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"the request body exceeds {limit} bytes", limit=limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class GraphQLEndpoint:
    """``POST /graphql`` (an ASGI app); :meth:`claims` also serves the data proxy."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.executor = gw.executor

    async def claims(self, request: Request) -> Claims | None:
        """The verified claims of a request's bearer token (None without one)."""
        return await self._claims(request.headers.get("authorization"))

    async def _claims(self, header: str | None) -> Claims | None:
        token = bearer_token(header)
        if token is None:
            return None
        auth, institution = self.gw.authenticator, self.gw.config.institution
        cached = auth.cached(token)
        if cached is not None and cached.inst == institution:
            return cached
        return await run_in_threadpool(authenticate, auth, token, institution)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, body = await self.answer(scope, receive)
        headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def answer(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        """The response status and JSON body of one request; counts it in the metrics."""
        started = time.perf_counter()
        gw = self.gw
        kind = "invalid"
        metrics = gw.metrics
        try:
            body = await read_body(scope, receive, gw.config.limits.max_body_bytes)
            try:
                payload = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise BadInput("the body must be JSON: {query, variables, operationName}") from None
            if not isinstance(payload, dict):
                raise BadInput("the body must be a JSON object")
            claims = await self._claims(_header(scope, b"authorization"))
            if claims is None and gw.config.public_chain:
                claims = anonymous(gw.config.institution)
            prepared = gw.engine.prepare(
                payload.get("query"),
                payload.get("variables"),
                payload.get("operationName"),
                claims,
            )
            kind = prepared.kind
            version = gw.watcher.height
            hit = gw.engine.cached(prepared, version)
            if hit is not None:
                metrics.cache_hits.inc()
                outcome, status, raw = "ok", 200, hit
            else:
                client = scope.get("client")
                source = client[0] if client else ""
                root = gw.governance if prepared.kind == "mutation" else None
                run = partial(gw.engine.run, prepared, claims, source, root)
                if prepared.kind == "query":
                    loop = asyncio.get_running_loop()
                    result = await loop.run_in_executor(self.executor, run)
                else:
                    result = await run_in_threadpool(run)
                raw = encode(result)
                if "errors" not in result:
                    gw.engine.remember(prepared, version, raw)
                outcome = "error" if "errors" in result else "ok"
                status = 200
        except GatewayError as exc:
            outcome, status, raw = exc.code, exc.status, encode(error_body([exc]))
            if exc.status in (401, 403):
                reason = exc.extra.get("reason") or exc.extra.get("required", "forbidden")
                label = f"missing_{reason}" if isinstance(exc, Forbidden) else str(reason)
                metrics.auth_failures.labels(gw.config.institution, label).inc()
            elif exc.code not in ("BAD_USER_INPUT", "GRAPHQL_VALIDATION_FAILED"):
                metrics.limited.labels(gw.config.institution, exc.code).inc()
        metrics.finished(kind, outcome, time.perf_counter() - started)
        return status, raw
