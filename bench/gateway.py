"""Gateway throughput: the explorer's latest-blocks page query with a valid JWT.

Starts a private Kafka and PostgreSQL, fills an institution database through the real
pipeline (SimChain finalizes, the chain projection writes), then runs the gateway under
uvicorn in its own process (real ``TokenVerifier`` over the JWKS of the key that signed the
token) and hammers ``POST /graphql`` from this process with ``--connections`` keep-alive
HTTP/1.1 connections (a small asyncio client, so the client is not the bottleneck).
Prints requests/s and p50/p99 latency; with ``--live`` a new block is finalized every
``--live`` seconds during the run (each new height invalidates the response cache).

    python -m bench.gateway [--seconds 10] [--connections 32] [--live 1.0] [--no-cache]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from infra.kafka_server import KafkaCluster
from infra.postgres_server import Postgres
from tests.integration.test_gateway_support import AUDIENCE, INSTITUTION, ISSUER, ChainFixture
from tests.integration.test_projections_support import anchor
from tests.stack_fixtures import private_settings

QUERY = """query Dashboard {
  summary { chainId height txCount okCount institutionCount recentTps }
  blocks(first: 15) { edges { node { height hash txCount okCount timestamp } } }
  transactions(first: 15) { edges { node { txId height position result sender operation } } }
}"""


def serve(argv: list[str]) -> None:
    """Child process: the gateway app under uvicorn."""
    import uvicorn  # noqa: PLC0415
    from psycopg_pool import ConnectionPool  # noqa: PLC0415

    from gateway.app import GatewayConfig, create_app  # noqa: PLC0415
    from gateway.auth.tokens import TokenVerifier  # noqa: PLC0415
    from gateway.context import Services  # noqa: PLC0415

    p = argparse.ArgumentParser()
    p.add_argument("--dsn")
    p.add_argument("--jwks")
    p.add_argument("--port", type=int)
    p.add_argument("--no-cache", action="store_true")
    args = p.parse_args(argv)
    jwks = json.loads(Path(args.jwks).read_text())
    verifier = TokenVerifier.from_jwks(jwks, issuer=ISSUER, audience=AUDIENCE, clock=time.time)
    pool: Any = ConnectionPool(
        args.dsn, min_size=4, max_size=10, open=True, kwargs={"autocommit": True}
    )
    services = Services(institution=INSTITUTION, pool=pool)
    config = GatewayConfig(institution=INSTITUTION, cache_responses=not args.no_cache)
    app = create_app(config, services, verifier, jwks=lambda: jwks)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        ws="none",
    )


async def _one_connection(
    port: int, request: bytes, stop_at: float, lat: list[float], errors: list[str]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12]
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            lat.append(time.perf_counter() - started)
            if status != b"200" or b'"errors"' in body:
                errors.append(body[:200].decode(errors="replace"))
    finally:
        writer.close()


async def hammer(
    port: int, token: str, seconds: float, connections: int
) -> tuple[list[float], list[str]]:
    body = json.dumps({"query": QUERY}).encode()
    request = (
        f"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    lat: list[float] = []
    errors: list[str] = []
    stop_at = time.perf_counter() + seconds
    await asyncio.gather(
        *(_one_connection(port, request, stop_at, lat, errors) for _ in range(connections))
    )
    return lat, errors


def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    import socket  # noqa: PLC0415

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gateway exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit("gateway did not start")


def main() -> None:  # noqa: PLR0915 (one linear script)
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--blocks-of", type=int, default=2000, help="anchors to project first")
    parser.add_argument("--live", type=float, default=0.0, help="a new block every N s (0: off)")
    parser.add_argument("--no-cache", action="store_true", help="disable the response cache")
    args = parser.parse_args()
    settings = private_settings()
    kafka, postgres = KafkaCluster(settings), Postgres(settings)
    work = Path(tempfile.mkdtemp(prefix="bench-gw-"))
    proc = None
    chain = None
    try:
        kafka.start()
        postgres.start()
        chain = ChainFixture(settings.bootstrap_servers, postgres.dsn("postgres"), work)
        chain.sim.send([anchor(chain.sim, chain.service, f"b-{i}") for i in range(args.blocks_of)])
        chain.height = chain.sim.finalize()
        chain.wait_projected(chain.height)
        token = chain.tokens.token(("chain:read",))
        jwks_file = work / "jwks.json"
        jwks_file.write_text(json.dumps(chain.tokens.ring.jwks()))
        import socket  # noqa: PLC0415

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [
            sys.executable,
            "-m",
            "bench.gateway",
            "--serve",
            "--dsn",
            chain.dsn,
            "--jwks",
            str(jwks_file),
            "--port",
            str(port),
        ]
        if args.no_cache:
            cmd.append("--no-cache")
        proc = subprocess.Popen(cmd)
        _wait_ready(port, proc)
        if args.live > 0:
            chain.start_live(args.live)
        asyncio.run(hammer(port, token, 2.0, args.connections))  # warm up
        lat, errors = asyncio.run(hammer(port, token, args.seconds, args.connections))
        lat.sort()
        n = len(lat)

        def p(q: float) -> float:
            return lat[min(n - 1, int(q * n))] * 1000

        print(
            f"gateway bench: {chain.height} blocks projected, query = explorer dashboard "
            f"(summary + 15 latest blocks + 15 latest transactions), valid JWT, "
            f"{args.connections} keep-alive connections, {args.seconds:g}s, "
            f"cache {'off' if args.no_cache else 'on'}, "
            + (f"a new block every {args.live:g}s" if args.live else "no new blocks")
        )
        print(f"  requests/s {n / args.seconds:8.0f}   (target >= 1500)")
        print(
            f"  latency ms p50 {p(0.50):6.2f}  p99 {p(0.99):6.2f}  max {lat[-1] * 1000:6.2f}"
            f"   (target p99 <= 50)  mean {statistics.fmean(lat) * 1000:.2f}"
        )
        print(f"  errors     {len(errors)}" + (f"  first: {errors[0]}" if errors else ""))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(15)
        if chain is not None:
            chain.close()
        kafka.stop()
        postgres.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(settings.state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
