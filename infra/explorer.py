"""``pantheon explorer --gateway URL``: the explorer with this installation's code (D55).

The explorer checks every block against a pinned genesis hash (D49), but a gateway serves the
page's scripts too: a gateway that serves its own ``trust.js`` can make any block VERIFIED.
This command serves the explorer's static files from the installed ``gateway`` package (the
files every gateway serves) on a loopback port, and forwards to the gateway the user names
only the page's public data requests (:mod:`infra.explorer_forward`): ``POST /graphql`` chain
reads and ``GET /genesis.avro``, and its ``newBlock`` subscription (:mod:`infra.explorer_live`).
With ``--token-file`` it also forwards ``GET /objects/<id>/proof`` (the token goes with that
request and the chain reads only; D60); without one that request is answered here with a
message saying so. Nothing else reaches the gateway (no login, no mutation, no object's
content, no upload).

Routes: ``GET /``, ``/favicon.ico``, ``/static/*``, ``GET /graphql`` (GraphiQL or the
playground, as the gateway would), ``POST /graphql``, ``WS /graphql``, ``GET /genesis.avro``
and ``GET /objects/<id>/proof`` (forwarded). A proof request that the browser marks as coming
from another site (``Sec-Fetch-Site``) is refused: a page elsewhere could otherwise make the
user's token fetch proofs (it could not read them, but each read is audited as the user's).
The gateway's deadlines for a slow request head and body apply (:mod:`gateway.deadlines`).
A request must name this server's host (``Host``, against DNS rebinding) and a ``POST`` must
be ``application/json`` (a cross-site form cannot send it without a preflight, which is not
answered), so another site open in the browser cannot use the token given with
``--token-file``.
"""

from __future__ import annotations

import argparse
import re
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

import gateway
from gateway.deadlines import (
    DEFAULT_BODY_MIN_RATE,
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEAD_TIMEOUT_S,
    BodyDeadline,
    HeadDeadlineProtocol,
)
from gateway.errors import BodyTooLarge, GatewayError
from infra.explorer_forward import ExplorerError, NotForwarded, RemoteGateway, public_request
from infra.explorer_live import relay

STATIC = Path(gateway.__file__).resolve().parent / "static"
"""The explorer's files in this installation (the same directory every gateway serves)."""

DEFAULT_PORT = 4080
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
SAME_SITE = ("same-origin", "none")
"""``Sec-Fetch-Site`` values of this explorer's own page, or of an address typed by the user."""
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class _Unsupported(GatewayError):
    code = "UNSUPPORTED_MEDIA_TYPE"
    status = 415


def _error(exc: GatewayError) -> Response:
    body = {"errors": [{"message": exc.message, "extensions": exc.extensions()}]}
    return JSONResponse(body, status_code=exc.status, headers=NO_STORE)


async def _body(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body above {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    remote: RemoteGateway,
    host: str = "127.0.0.1",
    static: Path = STATIC,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
) -> Starlette:
    """The local explorer's ASGI app: local files, public reads forwarded to ``remote``."""
    limits = remote.limits.request

    async def forward_graphql(request: Request) -> Response:
        try:
            if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
                raise _Unsupported("POST /graphql takes application/json")
            body = public_request(await _body(request, limits.max_body_bytes), limits)
            status, answer = await run_in_threadpool(remote.graphql, body)
        except GatewayError as exc:
            return _error(exc)
        return JSONResponse(answer, status_code=status, headers=NO_STORE)

    async def forward_genesis(_request: Request) -> Response:
        try:
            status, media_type, raw = await run_in_threadpool(remote.genesis)
        except GatewayError as exc:
            return _error(exc)
        return Response(raw, status_code=status, media_type=media_type, headers=NO_STORE)

    async def forward_proof(request: Request) -> Response:
        try:
            if request.headers.get("sec-fetch-site", "same-origin") not in SAME_SITE:
                raise NotForwarded("a proof is forwarded only for this explorer's own page")
            data_id = str(request.path_params["data_id"])
            status, answer = await run_in_threadpool(remote.object_proof, data_id)
        except GatewayError as exc:
            return _error(exc)
        return JSONResponse(answer, status_code=status, headers=NO_STORE)

    async def graphql_page(_request: Request) -> Response:
        installed = (static / "vendor" / "graphiql.min.js").is_file()  # by ./dev install
        page = "graphiql.html" if installed else "playground.html"
        return FileResponse(static / page, media_type="text/html")

    async def live(ws: WebSocket) -> None:
        await relay(ws, remote)

    async def index(_request: Request) -> Response:
        return FileResponse(static / "index.html", media_type="text/html")

    async def favicon(_request: Request) -> Response:
        return FileResponse(static / "favicon.svg", media_type="image/svg+xml")

    hosts = [*LOOPBACK_NAMES, host]
    return Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/favicon.ico", favicon, methods=["GET"]),
            Route("/graphql", forward_graphql, methods=["POST"]),
            Route("/graphql", graphql_page, methods=["GET"]),
            WebSocketRoute("/graphql", live),
            Route("/genesis.avro", forward_genesis, methods=["GET"]),
            Route("/objects/{data_id}/proof", forward_proof, methods=["GET"]),
            Mount("/static", StaticFiles(directory=static), name="static"),
        ],
        middleware=[
            Middleware(TrustedHostMiddleware, allowed_hosts=hosts),
            # a trickled body is cut as on the gateway (408); the head's deadline is uvicorn's
            # protocol, set by cmd_explorer
            Middleware(BodyDeadline, timeout_s=body_timeout_s, min_rate=DEFAULT_BODY_MIN_RATE),
        ],
    )


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, or a one-line :class:`ExplorerError` (port taken, bad address)."""
    sock: socket.socket | None = None
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(128)
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise ExplorerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def url_of(sock: socket.socket, genesis: str | None) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"#genesis={genesis}" if genesis else "")


def read_token(path: str) -> str:
    """The token in ``path``: one line of printable ASCII (it goes into an HTTP header)."""
    token = Path(path).read_text(errors="replace").strip()
    if not re.fullmatch(r"[\x21-\x7e]+", token):
        raise ExplorerError(
            f"--token-file {path}: not a token (one line of printable ASCII: the token the "
            "gateway's `login` mutation returns)"
        )
    return token


def cmd_explorer(args: argparse.Namespace) -> int:
    token = read_token(args.token_file) if args.token_file else None
    remote = RemoteGateway(args.gateway, token=token)
    height = remote.probe()
    sock = listen(args.host, args.port)
    print(f"Explorer with the code of this installation ({STATIC})")
    print(f"reading public chain data from {remote.url} (height {height}); open:")
    print(f"  {url_of(sock, args.genesis)}", flush=True)
    if not args.genesis:
        print("Pin the consortium's genesis hash on a block page (or pass --genesis HASH).")
    if token:
        print(f"Object proofs are fetched with the token of {args.token_file} (its user's reads).")
    if args.host not in LOOPBACK_NAMES:
        print(f"Warning: listening on {args.host}, not only this machine", file=sys.stderr)
    config = uvicorn.Config(
        create_app(remote, args.host),
        log_level="warning",
        lifespan="off",
        http=HeadDeadlineProtocol.with_timeout(DEFAULT_HEAD_TIMEOUT_S),
    )
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _genesis_hash(text: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise argparse.ArgumentTypeError("a genesis hash is 64 hexadecimal characters")
    return text.lower()


def add_explorer(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add: Callable[..., argparse.ArgumentParser],
) -> None:
    """``pantheon explorer``: serve the explorer locally over a remote gateway's data."""
    p = add(
        sub,
        "explorer",
        cmd_explorer,
        "serve the explorer from this installation, reading public chain data from a gateway",
    )
    p.add_argument(
        "--gateway", required=True, metavar="URL", help="the gateway's address, http://host:port"
    )
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        metavar="P",
        help=f"port to listen on (default {DEFAULT_PORT}; 0: any free port)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument(
        "--genesis",
        type=_genesis_hash,
        metavar="HASH",
        help="the consortium's genesis hash, pinned by the printed address (from a source you "
        "trust, not from this gateway)",
    )
    p.add_argument(
        "--token-file",
        metavar="FILE",
        help="send this file's token to the gateway with chain reads and object proofs (GET "
        "/objects/ID/proof, which need one; default none)",
    )
