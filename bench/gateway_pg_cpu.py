"""PostgreSQL's CPU per uncached explorer query, measured on the server's own clock (D65).

Starts a private Kafka and PostgreSQL, fills an institution database as ``bench.gateway``
does, then runs the query (``--mode dashboard``, ``explorer`` or ``mix``) ``--rounds``
times, one at a time, through the gateway's :class:`~gateway.engine.Engine` on ONE pooled
connection (no response cache), and prints:

* the CPU time of that connection's PostgreSQL backend per request (``/proc/<pid>/stat``
  of the backend: it counts parsing, planning, execution and the protocol, and not the
  load generator, the gateway or other sessions, so it varies less on a shared machine
  than whole-machine figures), and the statements (round trips) per request;
* for each distinct statement text: executions per request, how PostgreSQL's plan cache
  planned it (``generic_plans``/``custom_plans`` of ``pg_prepared_statements``: a custom
  plan is made on every execution), and one ``EXPLAIN (ANALYZE, BUFFERS)`` with its
  planning and execution time.

``--python-plan`` runs the Python plan (``Engine(sql_json=False)``, as before D59) instead.
To measure another checkout, copy this file into its ``bench/`` and run it there.

    python -m bench.gateway_pg_cpu [--mode dashboard|explorer|mix] [--rounds 3000] [--python-plan]
                                   [--no-explain]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from typing import Any, ClassVar

import psycopg

from bench.consensus import cpu_seconds
from bench.gateway import MODES, bodies_for, filled_chain
from harness.gateway_support import INSTITUTION

_PARAM = re.compile(r"%\((\w+)\)s|%s")


class RecordingCursor(psycopg.Cursor[Any]):
    """A real cursor that records the statements it sends (text, parameters)."""

    sent: ClassVar[list[tuple[str, Any]]] = []

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        text = query.decode() if isinstance(query, bytes) else str(query)
        RecordingCursor.sent.append((text, params))
        return super().execute(query, params, **kwargs)


def server_text(text: str) -> str:
    """The text psycopg prepares for a statement: ``$n`` for its placeholders (a name keeps
    the number of its first use)."""
    numbers: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        name = match.group(1) or f"#{len(numbers)}"
        return f"${numbers.setdefault(name, len(numbers) + 1)}"

    return _PARAM.sub(number, text)


def explain(conn: psycopg.Connection[Any], text: str, params: Any) -> list[str]:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of one statement as the gateway sends it."""
    rows = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {text}".encode(), params).fetchall()
    return [str(r[0]) for r in rows]


def measure(
    dsn: str, tokens: Any, bodies: list[bytes], rounds: int, *, sql_json: bool, show: bool
) -> None:
    from psycopg_pool import ConnectionPool  # noqa: PLC0415

    from gateway.context import Services  # noqa: PLC0415
    from gateway.engine import Engine  # noqa: PLC0415
    from gateway.limits import Limits  # noqa: PLC0415

    claims = tokens.verifier.verify(tokens.token(("chain:read",)))
    kwargs = {"autocommit": True, "cursor_factory": RecordingCursor}
    with ConnectionPool(dsn, min_size=1, max_size=1, kwargs=kwargs) as pool:
        engine = Engine(
            Services(institution=INSTITUTION, pool=pool),
            Limits(),
            cache_responses=False,
            sql_json=sql_json,
        )
        with pool.connection() as conn:
            backend = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]

        def run(i: int) -> None:
            payload = json.loads(bodies[i % len(bodies)])
            prepared = engine.prepare(
                payload["query"], payload.get("variables"), payload.get("operationName"), claims
            )
            engine.run(prepared, claims)

        for i in range(200):  # psycopg prepares after 5 runs, PostgreSQL plans 5 more
            run(i)
        RecordingCursor.sent.clear()
        cpu0, wall0 = cpu_seconds(backend), time.perf_counter()
        for i in range(rounds):
            run(i)
        cpu1, wall1 = cpu_seconds(backend), time.perf_counter()
        sent = list(RecordingCursor.sent)
        print(
            f"  PostgreSQL backend CPU per request {1000 * (cpu1 - cpu0) / rounds:.3f} ms, "
            f"{len(sent) / rounds:.2f} statements per request, "
            f"wall {1000 * (wall1 - wall0) / rounds:.3f} ms per request (one at a time)"
        )
        counts = Counter(text for text, _ in sent)
        example = {text: params for text, params in sent}
        with pool.connection() as conn:
            plans = {
                str(r[0]): (int(r[1]), int(r[2]))
                for r in conn.execute(
                    "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
                ).fetchall()
            }
            for text, count in counts.most_common():
                generic, custom = plans.get(server_text(text), (0, 0))
                print(
                    f"  {count / rounds:.2f} per request, plans generic {generic} custom "
                    f"{custom}: {text[:150]}{'...' if len(text) > 150 else ''}"
                )
                if show:
                    lines = explain(conn, text, example[text])
                    for line in lines[:2] + [x for x in lines if " Time: " in x]:
                        print(f"      {line.strip()}")  # the top node, its buffers, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=tuple(MODES), default="dashboard")
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--blocks-of", type=int, default=2000, help="anchors to project first")
    parser.add_argument("--python-plan", action="store_true", help="Engine(sql_json=False)")
    parser.add_argument("--no-explain", action="store_true")
    args = parser.parse_args()
    with filled_chain(args.blocks_of) as (chain, _postgres, _work):
        bodies = bodies_for(args.mode, chain.dsn, chain.height)
        print(
            f"gateway PostgreSQL CPU: {args.mode}, {args.rounds} requests one at a time, "
            f"{'Python plan' if args.python_plan else 'SQL plan'}, {chain.height} blocks"
        )
        show = not args.no_explain
        sql_json = not args.python_plan
        measure(chain.dsn, chain.tokens, bodies, args.rounds, sql_json=sql_json, show=show)


if __name__ == "__main__":
    main()
