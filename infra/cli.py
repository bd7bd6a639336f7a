"""The ``pantheon`` command line: ``pantheon <noun> <verb>``, ``--help`` everywhere.

Stack commands::

    pantheon up                 start the local stack (idempotent) and print where to look
    pantheon down               stop it
    pantheon status [--json]    which services run, where, healthy or not
    pantheon stop|start|restart SERVICE [--institution X]   one kind of process (kafka,
                                postgres, prometheus, validator, projector, gateway, batcher,
                                auditor), of one institution or all
    pantheon stack start|stop|status|fetch   the same, by their nouns
    pantheon keys generate|show FILE         Ed25519 key files (0600)
    pantheon keys prove-member --chain-id C --institution X --governance F [--operator F ...]
                                a candidate institution's proofs of possession for
                                proposeMember (D63), as JSON
    pantheon genesis create|show             a consortium's genesis and its keystore
    pantheon validator --institution X ...   one operator's validator (foreground)
    pantheon iam create-admin|forget-user|shred-forgotten   an institution's users (off-chain)
    pantheon explorer --gateway URL [--genesis HASH]   the explorer with this installation's
                                code, reading public chain data from any gateway (D55)

Errors are printed as one clear line (and the tail of a log when useful); exit codes: see
:func:`main`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from gateway import server as gateway_server
from infra import keystore, simulate
from infra.cli_iam import add_iam
from infra.cli_stack import (
    cmd_down,
    cmd_fetch,
    cmd_restart,
    cmd_start,
    cmd_status,
    cmd_stop,
    cmd_up,
    settings_of,
)
from infra.consortium import SERVICES
from infra.explorer import add_explorer
from infra.invocation import pantheon
from infra.local import Local, describe, option
from infra.settings import Settings
from infra.stack import STACK_SERVICES
from ledger.context import is_slug
from ledger.key_proofs import propose_member_args
from projections import projector, rebuild
from readers import audit, batcher, object_verify, proofs
from runtime import logs
from runtime.cli_args import EXIT_ERROR, Defaults, Parser
from runtime.kafka_config import quiet_clients
from streams import validator, validator_config

Handler = Callable[[argparse.Namespace], int]


def cmd_keys_generate(args: argparse.Namespace) -> int:
    if args.file is not None:
        path = Path(args.file)
        pair = keystore.generate_key(path)
    else:  # not in the working directory: under the state directory, named by its key id
        keys = settings_of(args).state_dir / "keys"
        fresh = keys / f".new-{os.getpid()}-{time.monotonic_ns()}.json"
        pair = keystore.generate_key(fresh)
        path = keys / f"{pair.key_id.hex()[:16]}.json"
        fresh.rename(path)
    print(json.dumps({**pair.describe(), "file": str(path)}, indent=2))
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    print(json.dumps(keystore.load_key(Path(args.file)).describe(), indent=2))
    return 0


def cmd_keys_prove_member(args: argparse.Namespace) -> int:
    if not is_slug(args.institution):
        raise ValueError(f"institution id {args.institution!r} is not a lowercase slug")
    proposal = propose_member_args(
        keystore.load_key(Path(args.governance)),
        [keystore.load_key(Path(f)) for f in args.operator],
        chain_id=args.chain_id,
        institution_id=args.institution,
    )
    print(
        json.dumps(  # the variables of the gateway's proposeMember mutation
            {
                "chainId": args.chain_id,
                "institutionId": args.institution,
                "governancePublicKey": proposal["governance_public_key"].hex(),
                "operatorPublicKeys": [k.hex() for k in proposal["operator_public_keys"]],
                "governanceKeyProof": proposal["governance_key_proof"].hex(),
                "operatorKeyProofs": [p.hex() for p in proposal["operator_key_proofs"]],
            },
            indent=2,
        )
    )
    return 0


def cmd_genesis_create(args: argparse.Namespace) -> int:
    institutions = [i.strip() for i in args.institutions.split(",") if i.strip()]
    if not institutions and args.count:
        institutions = [f"inst-{i + 1}" for i in range(args.count)]
    if not institutions:
        raise ValueError("name the founding institutions with --institutions a,b,c or --count N")
    out = Path(args.out or settings_of(args).state_dir / "networks" / args.chain_id)
    genesis = keystore.create_genesis(
        out, args.chain_id, institutions, operators_per_institution=args.operators
    )
    print(f"genesis {genesis.hash().hex()} for {len(institutions)} institutions in {out}")
    print(f"keys (0600) in {out / 'keys'}: keep them secret, give each institution its own")
    return 0


def cmd_genesis_show(args: argparse.Namespace) -> int:
    genesis = keystore.load_genesis(Path(args.file))
    print(json.dumps({"hash": genesis.hash().hex(), **genesis.record()}, indent=2, default=_hex))
    return 0


def _hex(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value).__name__)


def cmd_validator(args: argparse.Namespace) -> int:
    return validator.run(validator_config.config_from_args(args))


OPERATORS_HELP = (
    "validator processes per institution, each with its own operator key (default 1; a new "
    "genesis gets N operator keys per institution; the first-ranked live one publishes, D38)"
)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _add_keys(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add: Callable[..., argparse.ArgumentParser],
) -> None:
    """``pantheon keys generate|show|prove-member``."""
    keys = sub.add_parser("keys", help="Ed25519 key files (seed kept in a 0600 file)")
    key_verbs = keys.add_subparsers(dest="verb", required=True, metavar="<verb>")
    add(key_verbs, "generate", cmd_keys_generate, "create a new key file").add_argument(
        "file",
        nargs="?",
        help="path of the new key file (must not exist; default: <state>/keys/<key id>.json)",
    )
    add(key_verbs, "show", cmd_keys_show, "print a key file's public facts").add_argument(
        "file", help="path of the key file"
    )
    prove = add(
        key_verbs,
        "prove-member",
        cmd_keys_prove_member,
        "a candidate institution's proofs of possession of its keys, for proposeMember",
    )
    prove.add_argument("--chain-id", required=True, help="chain id of the consortium to join")
    prove.add_argument("--institution", required=True, help="the candidate's institution id")
    prove.add_argument("--governance", required=True, help="key file of its governance key")
    prove.add_argument(
        "--operator", action="append", default=[], help="key file of an operator key (repeat)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser: argparse.ArgumentParser = Parser(
        prog="pantheon",
        description="Pantheon consortium ledger: local stack and tools. Exit codes: 0 done, "
        "1 the answer is no (e.g. audit discrepancies, an invalid proof), 2 could not run "
        "(the reason in one line on stderr), 3 status: not all healthy.",
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

    up = add(sub, "up", cmd_up, "start the local consortium (idempotent), print where to look")
    up.add_argument("--brokers", type=int, choices=(1, 3), help="Kafka nodes (default 1)")
    up.add_argument(
        "--no-consortium", action="store_true", help="only Kafka, PostgreSQL and Prometheus"
    )
    kafka_auth_help = (
        "Kafka with SASL/SCRAM principals and ACLs (D26; or PANTHEON_KAFKA_AUTH=scram); "
        "stays on for this state directory"
    )
    up.add_argument("--kafka-auth", action="store_true", help=kafka_auth_help)
    up.add_argument("--operators", type=_positive, metavar="N", help=OPERATORS_HELP)
    add(sub, "down", cmd_down, "stop the local stack")
    add(sub, "status", cmd_status, "show which services run").add_argument(
        "--json", action="store_true", help="machine-readable output"
    )
    for verb, handler, text in (
        ("stop", cmd_stop, "stop one kind of process of the local stack"),
        ("start", cmd_start, "start one kind of process (unless it runs), wait until healthy"),
        ("restart", cmd_restart, "stop, then start one kind of process"),
    ):
        one = add(sub, verb, handler, text)
        one.add_argument("service", choices=(*STACK_SERVICES, *SERVICES), help="which process")
        one.add_argument(
            "--institution", help="only this institution's (default: every institution's)"
        )
    stack = sub.add_parser("stack", help="the local Kafka/PostgreSQL/Prometheus stack")
    verbs = stack.add_subparsers(dest="verb", required=True, metavar="<verb>")
    start = add(verbs, "start", cmd_up, "start the stack (same as `pantheon up`)")
    start.add_argument("--brokers", type=int, choices=(1, 3), help="Kafka nodes (default 1)")
    start.add_argument("--kafka-auth", action="store_true", help=kafka_auth_help)
    start.add_argument("--operators", type=_positive, metavar="N", help=OPERATORS_HELP)
    add(verbs, "stop", cmd_down, "stop the stack (same as `pantheon down`)")
    add(verbs, "status", cmd_status, "show which services run").add_argument(
        "--json", action="store_true", help="machine-readable output"
    )
    add(verbs, "fetch", cmd_fetch, "fetch the Kafka broker jars from Maven Central")

    sub.add_parser(
        "validator",
        parents=[validator_config.build_parser(add_help=False)],
        help="run one operator's validator process (foreground)",
        description="run one operator's validator process (foreground)",
    ).set_defaults(handler=cmd_validator)

    sub.add_parser(
        "projector",
        add_help=False,
        help="run one institution's projector into PostgreSQL (see: pantheon projector --help)",
    )
    sub.add_parser(
        "gateway",
        add_help=False,
        help="serve one institution's GraphQL gateway and explorer (see: pantheon gateway --help)",
    )
    for name, text in (
        ("audit", "replay every ledger topic and check the chain and a projection"),
        ("batcher", "run one institution's Layer-2 batcher"),
        ("proof", "fetch a device record with its proof to a final block"),
        ("verify", "check a downloaded proof offline against the genesis"),
        ("verify-object", "check a downloaded off-chain object offline against its proof"),
        ("simulate", "send a realistic IoT workload to the local consortium"),
    ):
        sub.add_parser(name, add_help=False, help=f"{text} (see: pantheon {name} --help)")
    projections_cmd = sub.add_parser("projections", help="projection maintenance")
    projections_cmd.add_subparsers(dest="verb", required=True, metavar="<verb>").add_parser(
        "rebuild",
        add_help=False,
        help="drop and rebuild an institution's projection from offset 0",
    )

    add_iam(sub, add)
    add_explorer(sub, add)

    _add_keys(sub, add)

    genesis = sub.add_parser("genesis", help="genesis documents of a consortium")
    gen_verbs = genesis.add_subparsers(dest="verb", required=True, metavar="<verb>")
    create = add(gen_verbs, "create", cmd_genesis_create, "create a genesis and its keys")
    create.add_argument(
        "--out", help="directory for genesis and keys (default: <state>/networks/<chain id>)"
    )
    create.add_argument("--chain-id", default="pantheon-local", help="chain id")
    create.add_argument("--institutions", default="", help="comma-separated institution ids")
    create.add_argument("--count", type=int, default=0, help="or: N institutions inst-1..N")
    create.add_argument("--operators", type=int, default=1, help="operators per institution")
    add(gen_verbs, "show", cmd_genesis_show, "print a genesis document").add_argument(
        "file", help="path of genesis.avro"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pantheon`` console script. Exit codes: 0 done; 1 the answer is
    no (audit discrepancies, an invalid proof, no final proof yet, not confirmed); 2 could not
    run (bad usage or input, a missing file or password, an unknown institution, a service
    unreachable), said in one line on stderr; 3 ``status``: not everything is healthy
    (``projections rebuild``: the projection diverged); 130 interrupted."""
    argv = list(sys.argv[1:] if argv is None else argv)
    settings: Settings | None = None
    try:
        settings = Settings.from_env()
        return _dispatch(argv, settings)
    except KeyboardInterrupt:
        return 130
    except SystemExit:
        raise
    except BaseException as exc:
        if os.environ.get("PANTHEON_TRACEBACK"):
            raise
        what = describe(exc, settings) if settings is not None else str(exc)
        print(f"pantheon: error: {what}", file=sys.stderr)
        return EXIT_ERROR


def _dispatch(argv: list[str], settings: Settings) -> int:
    if argv[:1] == ["projector"]:  # processes with their own argument parsers
        return projector.main(argv[1:])
    if argv[:1] == ["gateway"]:
        return gateway_server.main(argv[1:])
    if argv[:1] == ["batcher"]:
        return batcher.main(argv[1:])
    if not {"-v", "--verbose"} & set(argv):
        quiet_clients()  # one line when the broker is unreachable, not one per attempt
    if argv[:1] == ["simulate"]:
        return simulate.main(argv[1:])
    local = Local(settings)
    tools: dict[str, tuple[Callable[..., int], Callable[[Defaults], argparse.ArgumentParser]]] = {
        "audit": (audit.main, audit.build_parser),
        "proof": (proofs.proof_main, proofs.proof_parser),
        "verify": (proofs.verify_main, proofs.verify_parser),
        "verify-object": (object_verify.object_verify_main, object_verify.object_verify_parser),
    }
    if argv[:1] and argv[0] in tools:
        run, parser = tools[argv[0]]
        return run(argv[1:], defaults=local.prepare(argv[0], argv[1:], parser))
    if argv[:2] == ["projections", "rebuild"]:
        defaults = local.prepare("projections rebuild", argv[2:], rebuild.rebuild_parser)
        institution = option(argv, "--institution") or "<institution>"
        stop = pantheon("stop", "projector", "--institution", institution, settings=settings)
        return rebuild.main(argv[2:], defaults=defaults, stop_projector=f"`{stop}`")
    args = build_parser().parse_args(argv)
    logs.configure(verbose=args.verbose)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
