"""Load generators of the gateway bench: keep-alive HTTP/1.1 POSTs for a fixed time.

* :func:`python_load`: a small asyncio client in this process, any list of request bodies
  (the mix needs several); about as costly per request as the gateway's own HTTP stack.
* :func:`hey_load`: ``hey`` (``go install github.com/rakyll/hey@latest``), a compiled client,
  one body, found on ``PATH`` or in ``~/go/bin``; ``bench.gateway --client hey``. On this
  machine it used more CPU per request than the asyncio client (decisions D46), so it is not
  the default. It checks status codes only: the bench's warm-up runs the Python client,
  which also checks the bodies for GraphQL errors.

Both report the load generator's own CPU time, so a reader can see when the client, not the
gateway, was the limit on a machine they share.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one timed run measured (latencies in milliseconds)."""

    client: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    errors: list[str]
    client_cpu_s: float


def hey_path() -> str | None:
    """The ``hey`` binary, if installed."""
    found = shutil.which("hey")
    if found:
        return found
    home = Path.home() / "go" / "bin" / "hey"
    return str(home) if home.is_file() and os.access(home, os.X_OK) else None


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _one_connection(
    port: int,
    requests: list[bytes],
    start: int,
    *,
    stop_at: float,
    lat: list[float],
    errors: list[str],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = start
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(requests[i % len(requests)])
            i += 1
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


async def _hammer(
    port: int, token: str, seconds: float, connections: int, bodies: list[bytes]
) -> tuple[list[float], list[str]]:
    requests = [
        (
            f"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for body in bodies
    ]
    lat: list[float] = []
    errors: list[str] = []
    stop_at = time.perf_counter() + seconds
    step = max(1, len(requests) // max(connections, 1))
    await asyncio.gather(
        *(
            _one_connection(port, requests, c * step, stop_at=stop_at, lat=lat, errors=errors)
            for c in range(connections)
        )
    )
    return lat, errors


def python_load(
    port: int, token: str, seconds: float, connections: int, bodies: list[bytes]
) -> LoadResult:
    """``connections`` keep-alive connections from this process, cycling through ``bodies``."""
    cpu = _self_cpu()
    lat, errors = asyncio.run(_hammer(port, token, seconds, connections, bodies))
    cpu = _self_cpu() - cpu
    lat.sort()
    n = len(lat)

    def q(x: float) -> float:
        return lat[min(n - 1, int(x * n))] * 1000 if n else 0.0

    mean = 1000 * sum(lat) / n if n else 0.0
    max_ms = lat[-1] * 1000 if n else 0.0
    return LoadResult("python", n, seconds, q(0.5), q(0.99), max_ms, mean, errors, cpu)


_PERCENTILE = re.compile(r"^\s*(\d+)%+ in ([0-9.]+) secs", re.MULTILINE)  # hey prints "%%"
_STATUS = re.compile(r"^\s*\[(\d+)\]\s+(\d+) responses", re.MULTILINE)


def hey_load(
    hey: str, port: int, token: str, *, seconds: float, connections: int, body: bytes
) -> LoadResult:
    """``hey`` with ``connections`` workers posting ``body`` for ``seconds``."""
    with tempfile.NamedTemporaryFile(suffix=".json") as fh:
        fh.write(body)
        fh.flush()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(
            [
                hey,
                "-z",
                f"{seconds:g}s",
                "-c",
                str(connections),
                "-m",
                "POST",
                "-T",
                "application/json",
                "-H",
                f"Authorization: Bearer {token}",
                "-D",
                fh.name,
                f"http://127.0.0.1:{port}/graphql",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    percentiles = {int(p): float(v) * 1000 for p, v in _PERCENTILE.findall(out)}
    statuses = {int(c): int(n) for c, n in _STATUS.findall(out)}
    n = sum(statuses.values())
    errors = [f"HTTP {c}: {k} responses" for c, k in statuses.items() if c != 200]
    if "Error distribution:" in out:
        errors.append(out.split("Error distribution:", 1)[1].strip()[:200])

    def field(name: str) -> float:
        found = re.search(rf"{name}:\s+([0-9.]+) secs", out)
        return float(found.group(1)) * 1000 if found else 0.0

    return LoadResult(
        "hey",
        n,
        seconds,
        percentiles.get(50, 0.0),
        percentiles.get(99, 0.0),
        field("Slowest"),
        field("Average"),
        errors,
        cpu,
    )
