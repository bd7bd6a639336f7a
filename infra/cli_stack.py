"""``pantheon up|down|status|stop|start|restart|stack``: the local stack's commands."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from types import FrameType

from infra import kafka_acl, kafka_dist
from infra.errors import StackError
from infra.invocation import pantheon
from infra.rollback import UpInterrupted, summary
from infra.settings import Settings
from infra.stack import STACK_SERVICES, Stack


def settings_of(args: argparse.Namespace) -> Settings:
    """The local stack's settings, with the connection flags of ``args``."""
    settings = Settings.from_env()
    if getattr(args, "brokers", None):
        settings = settings.with_changes(kafka_brokers=args.brokers)
    if getattr(args, "kafka_auth", False):
        settings = settings.with_changes(kafka_auth="scram")
    return settings


@contextlib.contextmanager
def terminated_as_interrupted() -> Iterator[None]:
    """Within: SIGTERM raises KeyboardInterrupt, as Ctrl-C does, so ``up`` stops what it
    started before it exits (D60)."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_up(args: argparse.Namespace) -> int:
    began = time.monotonic()
    stack = Stack(settings_of(args))
    stack.consortium.operators = getattr(args, "operators", None)
    try:
        with terminated_as_interrupted():
            timings = stack.up(consortium=not getattr(args, "no_consortium", False))
    except UpInterrupted as exc:
        undone = f"stopped what it had started ({summary(exc.stopped)})" if exc.stopped else ""
        print(f"pantheon: interrupted; {undone or 'it had started nothing'}", file=sys.stderr)
        return 130
    total = time.monotonic() - began
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
    print(f"Pantheon local stack is up in {total:.1f}s ({steps})")
    _print_status(stack, as_json=False)
    if stack.consortium.institutions():
        credentials = stack.consortium.iam_setup(stack.postgres)
        pending = {inst: c for inst, c in credentials.items() if c}
        if pending:
            create = pantheon(
                "iam",
                "create-admin",
                "--institution",
                "<institution>",
                "--login",
                "<login>",
                settings=stack.settings,
            )
            print(
                '\nOne-time setup credentials, for the explorer\'s "First time?" form that '
                "creates an institution's first administrator (each "
                f"`{pantheon('up', settings=stack.settings)}` replaces the unused ones; on this "
                f"machine `{create}` does the same without one):"
            )
            gateways = stack.consortium.gateways()
            for inst, credential in pending.items():
                print(f"  {inst:<10} {credential}  at {gateways[inst][2]}/")
    if stack.kafka.secure:
        print(
            f"\nKafka requires SASL/SCRAM with ACLs (D26); each principal's password is in "
            f"{kafka_acl.auth_dir(stack.settings)}/<principal>.password (0600); a client uses "
            "PANTHEON_KAFKA_USER and PANTHEON_KAFKA_PASSWORD_FILE"
        )
    print(f"\nState: {stack.settings.state_dir}")
    print(f"Status: `{pantheon('status', settings=stack.settings)}`")
    print(f"Stop:   `{pantheon('down', settings=stack.settings)}`")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    Stack(settings_of(args)).down()
    print("Pantheon local stack stopped")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    stack = Stack(settings_of(args))
    return _print_status(stack, as_json=args.json)


def local_explorer(gateway_url: str, genesis: str | None) -> str:
    """The command that serves the explorer from this installation over ``gateway_url``."""
    pinned = ("--genesis", genesis) if genesis else ()
    return pantheon("explorer", "--gateway", gateway_url, *pinned)


def _print_status(stack: Stack, *, as_json: bool) -> int:
    statuses = stack.status()
    validators = stack.validators()
    gateways = stack.consortium.gateways()
    genesis = stack.consortium.genesis_hash()
    first_url = next(iter(gateways.values()))[2] if gateways else None
    if as_json:
        print(
            json.dumps(
                {
                    "services": [s.as_dict() for s in statuses],
                    "validators": [v.as_dict() for v in validators],
                    "projectors": [p.as_dict() for p in stack.projectors()],
                    "batchers": stack.consortium.running("batcher"),
                    "auditors": stack.consortium.running("auditor"),
                    "genesis_hash": genesis,
                    "local_explorer": first_url and local_explorer(first_url, genesis),
                    "gateways": [
                        {"name": inst, "running": run, "healthy": ok, "url": url}
                        for inst, (run, ok, url) in gateways.items()
                    ],
                },
                indent=2,
            )
        )
    else:
        for s in statuses:
            state = "healthy" if s.healthy else ("UNHEALTHY" if s.running else "stopped")
            print(f"  {s.name:<11} {state:<10} {s.address:<45} {s.detail}")
        if validators:
            print("\n  validator   state      cut    final  log")
        for v in validators:
            state = "healthy" if v.healthy else ("UNHEALTHY" if v.running else "stopped")
            print(f"  {v.name:<11} {state:<10} {v.cut_height:<6} {v.final_height:<6} {v.detail}")
        if gateways:
            print("\n  gateway     state      explorer and GraphQL (POST /graphql, playground GET)")
        for inst, (running, ok, url) in gateways.items():
            state = "healthy" if ok else ("UNHEALTHY" if running else "stopped")
            print(f"  {inst:<11} {state:<10} {url}/")
        if first_url and genesis:
            print(
                f"\n  genesis     {genesis}\n"
                "              the explorer's trust anchor: pin it once with "
                f"{first_url}/#genesis={genesis}\n"
                "              or serve the explorer from this installation's code (D55; "
                f"until Ctrl-C):\n                {local_explorer(first_url, genesis)}"
            )
        for service, what in (
            ("batcher", "Layer 2 (device records -> CommitBatch)"),
            ("auditor", "pantheon audit --every N, its metrics scraped by Prometheus"),
        ):
            alive = stack.consortium.running(service)
            if alive:
                print(f"\n  {service:<11} state      {what}")
            for inst, running in alive.items():
                print(f"  {inst:<11} {'running' if running else 'stopped':<10}")
        projectors = stack.projectors()
        if projectors:
            print("\n  projector   state      height  database")
        for p in projectors:
            state = "healthy" if p.healthy else ("UNHEALTHY" if p.running else "stopped")
            print(f"  {p.name:<11} {state:<10} {p.height!s:<7} {p.database}")
    healthy = (
        all(s.healthy for s in statuses)
        and all(v.healthy for v in validators)
        and all(ok for _, ok, _ in stack.consortium.gateways().values())
    )
    return 0 if healthy else 3


def _service_targets(args: argparse.Namespace, stack: Stack) -> list[str]:
    """The institutions ``--institution`` names (all of them when left out)."""
    if args.service in STACK_SERVICES:
        if args.institution is not None:
            raise ValueError(f"{args.service} is one for the whole stack: leave out --institution")
        return []
    known = stack.consortium.institutions()
    if args.institution is None:
        if not known:
            raise ValueError(unknown_institution("(any)", known))
        return known
    if args.institution not in known:
        raise ValueError(unknown_institution(args.institution, known))
    return [args.institution]


def cmd_stop(args: argparse.Namespace) -> int:
    stack = Stack(settings_of(args))
    for line in stack.stop_service(args.service, _service_targets(args, stack)):
        print(line)
    return 0


def _servers_needed(service: str, stack: Stack) -> None:
    """A StackError at once when ``service`` needs Kafka and PostgreSQL and one does not run
    (else ``start`` waits a minute for a process that cannot become healthy; D60)."""
    if service in STACK_SERVICES:
        return
    down = [
        name
        for name, running in (
            ("kafka", len(stack.kafka.running()) == len(stack.kafka.nodes)),
            ("postgres", stack.postgres.pid() is not None),
        )
        if not running
    ]
    if down:
        raise StackError(
            f"cannot start the {service}: {' and '.join(down)} not running; start the stack "
            f"with `{pantheon('up', settings=stack.settings)}`"
        )


def cmd_start(args: argparse.Namespace) -> int:
    stack = Stack(settings_of(args))
    _servers_needed(args.service, stack)
    for line in stack.start_service(args.service, _service_targets(args, stack)):
        print(line)
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    stack = Stack(settings_of(args))
    _servers_needed(args.service, stack)
    targets = _service_targets(args, stack)
    for line in stack.stop_service(args.service, targets):
        print(line)
    for line in stack.start_service(args.service, targets):
        print(line)
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    path = kafka_dist.fetch(settings.kafka_dist_dir, settings.kafka_version)
    print(f"Kafka {settings.kafka_version} jars in {path}")
    return 0


def unknown_institution(name: str, known: Sequence[str]) -> str:
    """The error for an institution the local consortium does not have."""
    if not known:
        up = pantheon("up")
        return f"unknown institution {name!r}: no local consortium yet; start it with `{up}`"
    return f"unknown institution {name!r}: the local consortium has {', '.join(known)}"
