"""The ``pantheon`` command line: ``pantheon <noun> <verb>``, ``--help`` everywhere.

Stack commands::

    pantheon up                 start the local stack (idempotent) and print where to look
    pantheon down               stop it
    pantheon status [--json]    which services run, where, healthy or not
    pantheon stack start|stop|status|fetch   the same, by their nouns

Errors are printed as one clear line (and the tail of a log when useful) with exit code 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence

from infra import kafka_dist, logs
from infra.errors import StackError
from infra.settings import Settings
from infra.stack import Stack

Handler = Callable[[argparse.Namespace], int]


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    if getattr(args, "brokers", None):
        settings = settings.with_changes(kafka_brokers=args.brokers)
    return settings


def cmd_up(args: argparse.Namespace) -> int:
    began = time.monotonic()
    stack = Stack(_settings(args))
    timings = stack.up()
    total = time.monotonic() - began
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
    print(f"Pantheon local stack is up in {total:.1f}s ({steps})")
    _print_status(stack, as_json=False)
    print(f"\nState: {stack.settings.state_dir}    stop with: pantheon down")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    Stack(_settings(args)).down()
    print("Pantheon local stack stopped")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    stack = Stack(_settings(args))
    return _print_status(stack, as_json=args.json)


def _print_status(stack: Stack, *, as_json: bool) -> int:
    statuses = stack.status()
    if as_json:
        print(json.dumps([s.as_dict() for s in statuses], indent=2))
    else:
        for s in statuses:
            state = "healthy" if s.healthy else ("UNHEALTHY" if s.running else "stopped")
            print(f"  {s.name:<11} {state:<10} {s.address:<45} {s.detail}")
    return 0 if all(s.healthy for s in statuses) else 3


def cmd_fetch(args: argparse.Namespace) -> int:
    settings = _settings(args)
    path = kafka_dist.fetch(settings.kafka_dist_dir, settings.kafka_version)
    print(f"Kafka {settings.kafka_version} jars in {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="pantheon", description="Pantheon consortium ledger: local stack and tools"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    def add(
        parent: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        handler: Handler,
        help_text: str,
    ) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    up = add(sub, "up", cmd_up, "start the local stack (idempotent) and print where to look")
    up.add_argument("--brokers", type=int, choices=(1, 3), help="Kafka nodes (default 1)")
    add(sub, "down", cmd_down, "stop the local stack")
    add(sub, "status", cmd_status, "show which services run").add_argument(
        "--json", action="store_true", help="machine-readable output"
    )
    stack = sub.add_parser("stack", help="the local Kafka/PostgreSQL/Prometheus stack")
    verbs = stack.add_subparsers(dest="verb", required=True, metavar="<verb>")
    start = add(verbs, "start", cmd_up, "start the stack (same as `pantheon up`)")
    start.add_argument("--brokers", type=int, choices=(1, 3), help="Kafka nodes (default 1)")
    add(verbs, "stop", cmd_down, "stop the stack (same as `pantheon down`)")
    add(verbs, "status", cmd_status, "show which services run").add_argument(
        "--json", action="store_true", help="machine-readable output"
    )
    add(verbs, "fetch", cmd_fetch, "fetch the Kafka broker jars from Maven Central")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pantheon`` console script."""
    args = build_parser().parse_args(argv)
    logs.configure(verbose=args.verbose)
    handler: Handler = args.handler
    try:
        return handler(args)
    except (StackError, ValueError, TimeoutError) as exc:
        print(f"pantheon: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
