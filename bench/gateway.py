"""Gateway throughput: the explorer's queries with a valid JWT, one query or a varied mix.

Starts a private Kafka and PostgreSQL, fills an institution database through the real
pipeline (SimChain finalizes, the chain projection writes), then runs the gateway under
uvicorn in its own process, or ``--workers N`` processes on one port (real ``TokenVerifier``
over the JWKS of the key that signed the token) and sends ``POST /graphql`` over
``--connections`` keep-alive HTTP/1.1 connections (:mod:`bench.http_load`: a small asyncio
client in this process, or ``--client hey`` for one query).
Prints requests/s, p50/p99 latency, the gateway processes' CPU time per request and the load
generator's; with
``--live`` a new block is finalized every ``--live`` seconds during the run (each new height
invalidates the response cache).

``--mode dashboard`` (default) repeats the dashboard query (``--mode explorer``: the
explorer's own, with 60 blocks and decoded arguments); ``--mode mix`` cycles
through the explorer's pages with varied arguments: the dashboard, a block by random height,
a transaction by random id, an address page, an institution's device records (mix: a new
block every 0.5 s unless ``--live`` says otherwise). ``--profile FILE`` samples the gateway
with py-spy (``pip install py-spy``) during the measured run, writes its collapsed stacks to
FILE and prints where the CPU went. ``--execution-cpu`` first measures, in this process and
one request at a time, the CPU (thread time) of decoding and preparing, executing and
encoding the queries (decisions D50); ``--threads N`` sets the query threads per worker and
``--plain-http`` serves with uvicorn's own protocol and collector settings, to compare.

    python -m bench.gateway [--mode dashboard|explorer|mix] [--seconds 10] [--connections 32]
                            [--live 1.0] [--no-cache] [--profile FILE] [--workers N]
                            [--client python|hey] [--threads N] [--plain-http]
                            [--execution-cpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.consensus import cpu_seconds
from bench.http_load import LoadResult, hey_load, hey_path, python_load
from harness.gateway_support import AUDIENCE, INSTITUTION, ISSUER, ChainFixture
from harness.projections_support import anchor
from harness.stack_fixtures import private_servers
from infra.postgres_server import Postgres
from infra.procs import descendants

TX_FIELDS = "txId height position result sender operation"
QUERY = """query Dashboard {
  summary { chainId height txCount okCount institutionCount recentTps }
  blocks(first: 15) { edges { node { height hash txCount okCount timestamp } } }
  transactions(first: 15) { edges { node { txId height position result sender operation } } }
}"""
# The explorer's own dashboard (gateway/static/explorer.js): 60 blocks for its chart, decoded
# arguments and senders for its transactions (--mode explorer).
EXPLORER = (
    "{ summary { chainId height txCount okCount institutionCount recentTps } "
    "blocks(first: 60) { edges { node { height hash txCount okCount timestamp timestampMs } } } "
    "transactions(first: 15) { edges { node { txId height position result sender operation "
    "arguments senderIdentity { role institutionId label } } } } }"
)
MODES = {
    "dashboard": "dashboard (summary + 15 latest blocks + 15 latest transactions)",
    "explorer": "the explorer's dashboard (summary, 60 blocks, 15 transactions with arguments)",
    "mix": "explorer mix (dashboard, block by height, transaction, address, devices)",
}
# The explorer's other pages (gateway/static/explorer.js), with their variables.
BLOCK = (
    "query($h: Int, $x: String) { block(height: $h, hash: $x) { height hash prevHash "
    "stateRoot txRoot validatorSetHash timestamp txCount okCount firstOffset lastOffset "
    "certificate { votes { institutionId operatorKeyId signature } } "
    f"transactions(first: 100) {{ edges {{ node {{ {TX_FIELDS} nonce }} }} "
    "pageInfo { hasNextPage } } } }"
)
TX = (
    "query($i: String!) { transaction(id: $i) { txId height position offset result sender "
    "nonce operation receipt { code blockHash } senderIdentity { role institutionId label } } }"
)
ADDRESS = (
    "query($k: String!) { identity(keyId: $k) { keyId publicKey role institutionId label "
    f"active nextNonce assets transactions(first: 50) {{ edges {{ node {{ {TX_FIELDS} }} }} }} }} "
    f"transactions(first: 50, sender: $k) {{ edges {{ node {{ {TX_FIELDS} }} }} }} }}"
)
DEVICES = (
    "query($i: String!) { devices(institution: $i, first: 20) { keyId label active "
    "nextNonce institutionId } }"
)


def mix_bodies(dsn: str, height: int, count: int = 400, seed: int = 7) -> list[bytes]:
    """Request bodies of the explorer's pages with arguments drawn from the database."""
    import random  # noqa: PLC0415

    import psycopg  # noqa: PLC0415

    rnd = random.Random(seed)
    with psycopg.connect(dsn, autocommit=True) as conn:
        tx_ids = [
            bytes(r[0]).hex()
            for r in conn.execute(
                "SELECT tx_id FROM chain.transactions ORDER BY random() LIMIT 500"
            ).fetchall()
        ]
        keys = [bytes(r[0]).hex() for r in conn.execute("SELECT key_id FROM chain.keys").fetchall()]
        institutions = [
            r[0] for r in conn.execute("SELECT institution_id FROM chain.institutions").fetchall()
        ]
    bodies = []
    for i in range(count):
        page = i % 5
        if page == 0:
            payload: dict[str, Any] = {"query": QUERY}
        elif page == 1:
            payload = {"query": BLOCK, "variables": {"h": rnd.randint(1, height)}}
        elif page == 2:
            payload = {"query": TX, "variables": {"i": rnd.choice(tx_ids)}}
        elif page == 3:
            payload = {"query": ADDRESS, "variables": {"k": rnd.choice(keys)}}
        else:
            payload = {"query": DEVICES, "variables": {"i": rnd.choice(institutions)}}
        bodies.append(json.dumps(payload).encode())
    return bodies


def bodies_for(mode: str, dsn: str, height: int) -> list[bytes]:
    """The request bodies a ``--mode`` sends."""
    if mode == "mix":
        return mix_bodies(dsn, height)
    return [json.dumps({"query": EXPLORER if mode == "explorer" else QUERY}).encode()]


def serve(argv: list[str]) -> int:
    """Child process: the gateway app under uvicorn (``--workers N``: N processes on one
    socket, as ``pantheon gateway --workers N``)."""
    import uvicorn  # noqa: PLC0415
    from psycopg_pool import ConnectionPool  # noqa: PLC0415

    from gateway.app import GatewayConfig, create_app  # noqa: PLC0415
    from gateway.auth.tokens import TokenVerifier  # noqa: PLC0415
    from gateway.context import Services  # noqa: PLC0415
    from gateway.serving import GatewayProtocol, settle_heap  # noqa: PLC0415
    from gateway.workers import Supervisor, listener, reserve  # noqa: PLC0415

    p = argparse.ArgumentParser()
    p.add_argument("--dsn")
    p.add_argument("--jwks")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--plain-http", action="store_true")
    args = p.parse_args(argv)
    jwks = json.loads(Path(args.jwks).read_text())

    def run(_index: int, ready: Any) -> int:
        verifier = TokenVerifier.from_jwks(jwks, issuer=ISSUER, audience=AUDIENCE, clock=time.time)
        pool: Any = ConnectionPool(
            args.dsn, min_size=4, max_size=10, open=True, kwargs={"autocommit": True}
        )
        services = Services(institution=INSTITUTION, pool=pool)
        config = GatewayConfig(institution=INSTITUTION, cache_responses=not args.no_cache)
        if args.threads > 0:
            config = dataclasses.replace(config, execution_threads=args.threads)
        app = create_app(config, services, verifier, jwks=lambda: jwks)
        ready()
        if not args.plain_http:
            settle_heap()
        server = uvicorn.Server(
            uvicorn.Config(  # as gateway/server.py configures it
                app,
                log_level="warning",
                access_log=False,
                loop="uvloop",
                http="httptools" if args.plain_http else GatewayProtocol,
                ws="none",
                proxy_headers=False,
            )
        )
        server.run(sockets=[listener("127.0.0.1", args.port)])
        pool.close()
        return 0

    with reserve("127.0.0.1", args.port):  # the port is the bench's while the workers run
        if args.workers == 1:
            return run(0, lambda: None)
        return Supervisor(args.workers, run).serve()


BUCKETS = (
    ("JSON encode/decode", ("json/", "orjson", "encode (gateway/engine")),
    ("parse + validate + limits", ("graphql/language", "graphql/validation", "gateway/limits")),
    ("SQL (psycopg, pool)", ("psycopg",)),
    (
        "resolvers (gateway code)",
        (
            "gateway/schema",
            "gateway/types",
            "projections/read",
            "gateway/compiled",
        ),
    ),
    ("graphql execution machinery", ("graphql/execution", "graphql/type", "graphene/")),
    ("auth (JWT)", ("gateway/auth", "gateway/authn", "jwt/", "cryptography")),
    (
        "HTTP server (uvicorn, starlette, asyncio)",
        ("uvicorn", "starlette", "asyncio", "anyio", "httptools", "uvloop"),
    ),
)


def profile_summary(collapsed: Path, top: int = 12) -> None:
    """Where the sampled CPU went: by bucket (innermost matching frame) and by function."""
    buckets: dict[str, int] = {}
    functions: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        functions[frames[-1]] = functions.get(frames[-1], 0) + count
        label = "other"
        for frame in reversed(frames):
            hit = next((b for b, keys in BUCKETS if any(k in frame for k in keys)), None)
            if hit is not None:
                label = hit
                break
        buckets[label] = buckets.get(label, 0) + count
    if not total:
        print("  profile: no samples")
        return
    print(f"  profile ({total} samples of the gateway process, innermost known frame):")
    for label, count in sorted(buckets.items(), key=lambda kv: -kv[1]):
        print(f"    {100 * count / total:5.1f}%  {label}")
    print("  top functions (self time):")
    for name, count in sorted(functions.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {100 * count / total:5.1f}%  {name[:110]}")


def _wait_ready(port: int, proc: subprocess.Popen[bytes], workers: int) -> list[int]:
    """Wait until the gateway answers ``/healthz`` and all its workers run; their pids."""
    import http.client  # noqa: PLC0415

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gateway exited with {proc.returncode}")
        pids = [proc.pid] if workers == 1 else descendants(proc.pid)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200 and len(pids) == workers:
                return pids
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.2)
    raise SystemExit("gateway did not start")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from ``/proc/stat``."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / tick, sum(fields) / tick


def execution_cpu(dsn: str, jwks: dict[str, Any], token: str, bodies: list[bytes]) -> None:
    """This thread's CPU per request for each step after HTTP, in this process, one at a time
    (no threads, no other request): what the gateway's code costs without contention."""
    from psycopg_pool import ConnectionPool  # noqa: PLC0415

    from gateway.auth.tokens import TokenVerifier  # noqa: PLC0415
    from gateway.context import Services  # noqa: PLC0415
    from gateway.engine import Engine, encode  # noqa: PLC0415
    from gateway.limits import Limits  # noqa: PLC0415

    verifier = TokenVerifier.from_jwks(jwks, issuer=ISSUER, audience=AUDIENCE, clock=time.time)
    claims = verifier.verify(token)
    with ConnectionPool(dsn, min_size=1, max_size=1, kwargs={"autocommit": True}) as pool:
        engine = Engine(Services(institution=INSTITUTION, pool=pool), Limits())
        steps = {"decode + prepare": 0.0, "execute (plan, resolvers, SQL)": 0.0, "encode": 0.0}
        rounds = 3000
        for i in range(rounds + 200):  # the first 200 warm the caches and the statements
            body = bodies[i % len(bodies)]
            t0 = time.thread_time()
            payload = json.loads(body)
            prepared = engine.prepare(
                payload["query"], payload.get("variables"), payload.get("operationName"), claims
            )
            t1 = time.thread_time()
            result = engine.run(prepared, claims)
            t2 = time.thread_time()
            encode(result)
            t3 = time.thread_time()
            if i >= 200:
                for name, spent in zip(steps, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                    steps[name] += spent
        print("  in-process CPU per request, one at a time (thread time):")
        for name, spent in steps.items():
            print(f"    {1000 * spent / rounds:.3f} ms  {name}")


def system_seconds(pid: int) -> float:
    """System (kernel) CPU seconds of a live process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return int(fields[12]) / os.sysconf("SC_CLK_TCK")


def report(run: LoadResult, cpu: dict[str, float], warm: LoadResult, workers: int) -> None:
    """Print one run's figures (``cpu``: seconds used during the run, by whom)."""
    n = max(run.requests, 1)
    print(
        f"gateway bench: {run.requests / run.seconds:.0f} requests/s (target >= 1500), "
        f"workers {workers}, client {run.client}"
    )
    print(
        f"  latency ms p50 {run.p50_ms:6.2f}  p99 {run.p99_ms:6.2f}  max {run.max_ms:6.2f}"
        f"   (target p99 <= 50)  mean {run.mean_ms:.2f}"
    )
    print(
        f"  CPU ms/request: gateway {1000 * cpu['gateway'] / n:.3f}, postgres "
        f"{1000 * cpu['postgres'] / n:.3f}, load generator {1000 * run.client_cpu_s / n:.3f}; "
        f"machine busy {100 * cpu['busy'] / cpu['total']:.0f}% of {os.cpu_count()} cores, "
        f"the gateway's share {100 * cpu['gateway'] / cpu['total']:.0f}%"
    )
    print(
        f"  gateway CPU in the kernel {100 * cpu['gateway_sys'] / max(cpu['gateway'], 1e-9):.0f}%"
    )
    errors = [*warm.errors, *run.errors]
    print(f"  errors     {len(errors)}" + (f"  first: {errors[0]}" if errors else ""))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        sys.exit(serve(sys.argv[2:]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--blocks-of", type=int, default=2000, help="anchors to project first")
    parser.add_argument("--live", type=float, default=0.0, help="a new block every N s (0: off)")
    parser.add_argument("--no-cache", action="store_true", help="disable the response cache")
    parser.add_argument("--mode", choices=tuple(MODES), default="dashboard")
    parser.add_argument("--profile", type=Path, help="py-spy collapsed stacks to this file")
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    parser.add_argument(
        "--threads", type=int, default=0, help="query threads per worker (0: the gateway's)"
    )
    parser.add_argument(
        "--execution-cpu",
        action="store_true",
        help="also measure the CPU of prepare, execute and encode in this process",
    )
    parser.add_argument(
        "--plain-http",
        action="store_true",
        help="uvicorn's own protocol and the default collector (before D50), to compare",
    )
    parser.add_argument(
        "--client",
        choices=("python", "hey"),
        default="python",
        help="load generator: this process's asyncio client (cheaper per request here, "
        "D46) or hey (one query only)",
    )
    args = parser.parse_args()
    live = args.live if args.live > 0 or args.mode != "mix" else 0.5
    with filled_chain(args.blocks_of) as (chain, postgres, work):
        _measure(args, live, chain, postgres, work)


@contextmanager
def filled_chain(blocks_of: int) -> Iterator[tuple[ChainFixture, Postgres, Path]]:
    """A private Kafka and PostgreSQL, an institution database filled through the real
    pipeline (``blocks_of`` anchors, finalized and projected) and a work directory; the
    chain's Kafka clients closed before the servers stop (D71), everything removed."""
    with private_servers("bench-gw-") as (settings, _, postgres, work):
        chain = ChainFixture(settings.bootstrap_servers, postgres.dsn("postgres"), work)
        try:
            chain.sim.send([anchor(chain.sim, chain.service, f"b-{i}") for i in range(blocks_of)])
            chain.height = chain.sim.finalize()
            chain.wait_projected(chain.height)
            yield chain, postgres, work
        finally:
            chain.close()


def _measure(  # noqa: PLR0915 (one linear script)
    args: argparse.Namespace, live: float, chain: ChainFixture, postgres: Postgres, work: Path
) -> None:
    proc = None
    try:
        token = chain.tokens.token(("chain:read",))
        jwks_file = work / "jwks.json"
        jwks_file.write_text(json.dumps(chain.tokens.ring.jwks()))
        bodies = bodies_for(args.mode, chain.dsn, chain.height)
        import socket  # noqa: PLC0415

        if args.execution_cpu:
            execution_cpu(chain.dsn, chain.tokens.ring.jwks(), token, bodies)
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
        cmd += ["--workers", str(args.workers)]
        if args.threads > 0:
            cmd += ["--threads", str(args.threads)]
        if args.plain_http:
            cmd.append("--plain-http")
        if args.no_cache:
            cmd.append("--no-cache")
        proc = subprocess.Popen(cmd)
        pids = _wait_ready(port, proc, args.workers)
        if live > 0:
            chain.start_live(live)
        warm = python_load(port, token, 2.0, args.connections, bodies)  # also checks bodies
        hey = hey_path() if args.client == "hey" and len(bodies) == 1 else None
        if args.client == "hey" and hey is None:
            raise SystemExit("--client hey: hey is not installed (or the mode sends several)")
        spy = None
        if args.profile is not None:
            spy = subprocess.Popen(
                [
                    shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(pids[0]),
                    "--format",
                    "raw",
                    "--output",
                    str(args.profile),
                    "--duration",
                    str(int(args.seconds)),
                    "--rate",
                    "200",
                    "--gil",
                ],
                stdout=subprocess.DEVNULL,
            )
        pg_pid = postgres.pid()
        pg_pids = [] if pg_pid is None else [pg_pid]

        def used() -> dict[str, float]:
            busy, total = machine_cpu()
            return {
                "gateway": sum(cpu_seconds(pid) for pid in pids),
                "gateway_sys": sum(system_seconds(pid) for pid in pids),
                "postgres": sum(cpu_seconds(p) for p in [*pg_pids, *descendants(*pg_pids)]),
                "busy": busy,
                "total": total,
            }

        cpu_before = used()
        if hey is not None:
            run = hey_load(
                hey, port, token, seconds=args.seconds, connections=args.connections, body=bodies[0]
            )
        else:
            run = python_load(port, token, args.seconds, args.connections, bodies)
        cpu = {k: v - cpu_before[k] for k, v in used().items()}
        report(run, cpu, warm, len(pids))
        what = MODES[args.mode]
        print(
            f"  ({chain.height} blocks projected, query = {what}, valid JWT, "
            f"{args.connections} keep-alive connections, {args.seconds:g}s, "
            f"cache {'off' if args.no_cache else 'on'}, "
            + (f"a new block every {live:g}s)" if live else "no new blocks)")
        )
        if spy is not None and args.profile is not None:
            spy.wait(30)
            profile_summary(args.profile)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(15)


if __name__ == "__main__":
    main()
