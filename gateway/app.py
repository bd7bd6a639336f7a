"""The gateway's ASGI app: GraphQL over HTTP and WebSocket, playground, explorer, health.

Routes
------
``POST /graphql``             GraphQL (JSON ``{query, variables, operationName}``)
``GET  /graphql``             GraphiQL for browsers (the minimal playground if it is not
                              installed); 405 JSON for other clients
``WS   /graphql``             subscriptions (``graphql-transport-ws``)
``GET  /``                    the block explorer (static files of ``gateway/static``)
``GET  /favicon.ico``         the explorer's icon (SVG)
``GET  /genesis.avro``        the genesis document the gateway was given (404 without one):
                              the explorer checks it against the hash the user pinned (D49)
``GET  /healthz``             ``{"status": "ok", "height": N}`` (503 without the database)
``GET  /metrics``             Prometheus text format
``GET  /.well-known/jwks.json`` the public keys that verify this institution's tokens
``PUT  /objects/{id}``        the data access proxy (:mod:`gateway.objects`), when configured:
``GET  /objects/{id}``        store/read off-chain objects anchored on chain, and their
``GET  /objects/{id}/proof``  proofs (503 ``DATA_PROXY_DISABLED`` without it)

Chain data is public when ``GatewayConfig.public_chain`` is set (``pantheon gateway`` sets it
unless ``--private-chain``): a request without a token then reads the chain as
:func:`gateway.authn.anonymous`; ``me``, mutations and ``/objects`` still need a token.

Status codes: a refused token is 401, a missing permission 403, a body above the limit 413,
a body that does not arrive in time 408 (:mod:`gateway.deadlines`; the connection is then
closed), a refused query (syntax, validation, limits, bad input) 400 -- each with a GraphQL
``{"errors": [{"message", "extensions": {"code", ...}}]}`` body. Executed operations answer
200 with ``data`` and, if some field failed, ``errors``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from gateway.authn import Authenticator, CachingAuthenticator, anonymous
from gateway.context import Services
from gateway.deadlines import DEFAULT_BODY_MIN_RATE, DEFAULT_BODY_TIMEOUT_S, BodyDeadline
from gateway.engine import Engine, encode
from gateway.errors import BadInput, Unavailable, error_body
from gateway.governance import Governance
from gateway.graphql_http import GraphQLEndpoint
from gateway.limits import Limits
from gateway.live import HeightWatcher, serve_websocket
from gateway.metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from gateway.objects import DataProxy
from projections.read import queries

log = logging.getLogger("pantheon.gateway")
STATIC = Path(__file__).resolve().parent / "static"
JSON_TYPE = "application/json"


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    """How one institution's gateway behaves."""

    institution: str
    limits: Limits = field(default_factory=Limits)
    cache_responses: bool = True
    poll_interval_s: float = 0.25
    auth_cache_ttl_s: float = 1.0
    static_dir: Path = STATIC
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S  # then 408, see gateway.deadlines
    body_min_rate: int = DEFAULT_BODY_MIN_RATE  # bytes/s that extend the body's budget
    #: chain queries and subscriptions without a token (decisions D39); IAM, ``me`` and the
    #: data proxy stay private either way
    public_chain: bool = False
    #: threads executing queries at once (more than the database pool's size does not help:
    #: they only queue for a connection while contending for the GIL)
    execution_threads: int = 8
    #: the genesis file served at ``/genesis.avro`` for the explorer's trust anchor (D49)
    genesis_file: Path | None = None


@dataclass(slots=True, kw_only=True)
class Gateway:
    """The pieces of a running app (``app.state.gateway``), for tests and the server."""

    config: GatewayConfig
    services: Services
    engine: Engine
    authenticator: CachingAuthenticator
    watcher: HeightWatcher
    metrics: GatewayMetrics
    jwks: Callable[[], dict[str, Any]] | None
    governance: Governance | None = None  # the root value of mutations
    objects: DataProxy | None = None  # the data access proxy
    #: the threads that execute queries (a plain executor: cheaper to hand work to than
    #: anyio's worker threads, and bounded so threads do not queue for connections);
    #: mutations (logins hash passwords) keep Starlette's thread pool
    executor: ThreadPoolExecutor = field(default_factory=ThreadPoolExecutor)


def _json(body: Any, status: int = 200) -> Response:
    return Response(encode(body), status, media_type=JSON_TYPE)


def create_app(
    config: GatewayConfig,
    services: Services,
    authenticator: Authenticator,
    *,
    jwks: Callable[[], dict[str, Any]] | None = None,
    governance: Governance | None = None,
    objects: DataProxy | None = None,
) -> Starlette:
    """The ASGI app of one institution's gateway; auth and services are injected.

    ``governance`` signs the governance mutations (None: they answer
    ``GOVERNANCE_KEY_MISSING``); ``objects`` serves ``/objects`` (None: 503)."""
    metrics = GatewayMetrics(config.institution)
    gw = Gateway(
        config=config,
        services=services,
        engine=Engine(services, config.limits, cache_responses=config.cache_responses),
        authenticator=CachingAuthenticator(authenticator, ttl_s=config.auth_cache_ttl_s),
        watcher=HeightWatcher(services.pool, config.poll_interval_s),
        metrics=metrics,
        jwks=jwks or (services.accounts.jwks if services.accounts is not None else None),
        governance=governance,
        objects=objects,
        executor=ThreadPoolExecutor(config.execution_threads, thread_name_prefix="graphql"),
    )
    static = config.static_dir

    async def graphql_get(request: Request) -> Response:
        if "text/html" in request.headers.get("accept", ""):
            installed = (static / "vendor" / "graphiql.min.js").is_file()  # by ./dev install
            page = "graphiql.html" if installed else "playground.html"
            return FileResponse(static / page, media_type="text/html")
        return _json(
            error_body(
                [
                    BadInput(
                        "send GraphQL with POST (or open this URL in a browser for the playground)"
                    )
                ]
            ),
            405,
        )

    async def index(_request: Request) -> Response:
        return FileResponse(static / "index.html", media_type="text/html")

    async def favicon(_request: Request) -> Response:
        return FileResponse(static / "favicon.svg", media_type="image/svg+xml")

    async def genesis(_request: Request) -> Response:
        if config.genesis_file is None:
            exc = Unavailable("this gateway was not given its genesis file (--genesis)")
            exc.code, exc.status = "NO_GENESIS", 404
            return _json(error_body([exc]), exc.status)
        return FileResponse(config.genesis_file, media_type="application/octet-stream")

    async def healthz(_request: Request) -> Response:
        def height() -> int | None:
            with services.pool.connection(timeout=2.0) as conn:
                return queries.chain_height(conn)

        try:
            current = await run_in_threadpool(height)
        except Exception as exc:
            log.warning("health check failed", extra={"error": type(exc).__name__})
            return JSONResponse({"status": "unavailable", "error": "database"}, 503)
        gw.metrics.height.set(current or 0)
        return JSONResponse({"status": "ok", "institution": config.institution, "height": current})

    async def metrics_endpoint(_request: Request) -> Response:
        if gw.watcher.height is not None:
            gw.metrics.height.set(gw.watcher.height)
        return Response(gw.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def jwks_endpoint(_request: Request) -> Response:
        if gw.jwks is None:
            return JSONResponse({"keys": []})
        return JSONResponse(await run_in_threadpool(gw.jwks))

    async def websocket(ws: WebSocket) -> None:
        default = anonymous(config.institution) if config.public_chain else None
        await serve_websocket(
            ws, gw.engine, gw.watcher, gw.metrics, gw.authenticator, default=default
        )

    async def objects_disabled(_request: Request) -> Response:
        exc = Unavailable("this gateway has no data access proxy")
        exc.code = "DATA_PROXY_DISABLED"
        return _json(error_body([exc]), exc.status)

    if objects is not None:
        object_routes: list[Route] = objects.routes(GraphQLEndpoint(gw).claims, gw.metrics)
    else:
        object_routes = [
            Route("/objects/{data_id}/proof", objects_disabled, methods=["GET"]),
            Route("/objects/{data_id}", objects_disabled, methods=["GET", "PUT"]),
        ]

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await gw.watcher.poll_once()
        gw.watcher.start()
        try:
            yield
        finally:
            await gw.watcher.stop()

    app = Starlette(
        routes=[
            Route("/graphql", GraphQLEndpoint(gw), methods=["POST"]),
            Route("/graphql", graphql_get, methods=["GET"]),
            WebSocketRoute("/graphql", websocket),
            Route("/", index, methods=["GET"]),
            Route("/favicon.ico", favicon, methods=["GET"]),
            Route("/genesis.avro", genesis, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/.well-known/jwks.json", jwks_endpoint, methods=["GET"]),
            Mount("/static", StaticFiles(directory=static), name="static"),
            *object_routes,
        ],
        middleware=[
            Middleware(BodyDeadline, timeout_s=config.body_timeout_s, min_rate=config.body_min_rate)
        ],
        lifespan=lifespan,
    )
    app.state.gateway = gw
    return app
