"""``pantheon simulate`` against the local consortium: keys, nonces from its databases, and
the command line."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

import psycopg

from infra.consortium import Consortium
from infra.invocation import pantheon
from infra.keystore import generate_key, load_genesis, load_key
from infra.local import describe
from infra.postgres_server import Postgres
from infra.settings import Settings
from infra.simulate.runner import NonceLookup, SimConfig, Simulator
from infra.simulate.stats import format_summary
from ledger.keys import KeyPair
from projections import read
from projections.projector import database_name
from runtime.cli_args import one_line


def load_governance_key(path: Path) -> KeyPair:
    """The governance key of an institution keystore (``pantheon genesis create``)."""
    mode = path.stat().st_mode
    if mode & 0o077:
        raise ValueError(f"{path} is readable by others (mode {mode & 0o777:o}); chmod 600")
    doc = json.loads(path.read_text())
    return KeyPair.from_seed(bytes.fromhex(doc["governance"]["seed"]))


def service_key(path: Path) -> KeyPair:
    """The simulator's service key of one institution, created (0600) on first use."""
    return load_key(path) if path.exists() else generate_key(path)


def db_nonce_lookup(dsns: Mapping[str, str]) -> NonceLookup:
    """Read ``chain.keys.next_nonce`` from the institution's projected database."""

    def lookup(institution: str, key_id: bytes) -> int | None:
        try:
            with psycopg.connect(dsns[institution], connect_timeout=3) as conn:
                row = conn.execute(
                    "SELECT next_nonce FROM chain.keys WHERE key_id = %s", (key_id,)
                ).fetchone()
        except psycopg.Error:
            return None
        return 0 if row is None else int(row[0])

    return lookup


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``pantheon simulate``."""
    p = argparse.ArgumentParser(
        prog="pantheon simulate",
        description="send a realistic IoT workload to the local consortium",
    )
    p.add_argument("--rate", type=float, default=20.0, help="transactions per second (20)")
    p.add_argument("--seconds", type=float, default=None, help="run time (default: until Ctrl-C)")
    p.add_argument(
        "--institutions", default="", help="comma-separated subset of senders (default: all)"
    )
    p.add_argument("--drain", type=float, default=15.0, help="seconds to await receipts at the end")
    p.add_argument("--seed", type=int, default=None, help="seed of the workload (reproducible)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    return p


def _config_from_local(
    args: argparse.Namespace, settings: Settings
) -> tuple[SimConfig, NonceLookup]:
    consortium = Consortium(settings)
    members = consortium.institutions()
    if not members:
        raise ValueError(f"no consortium in {consortium.home}; start it with `{pantheon('up')}`")
    wanted = [i.strip() for i in args.institutions.split(",") if i.strip()] or members
    unknown = sorted(set(wanted) - set(members))
    if unknown:
        raise ValueError(f"not members of the local consortium: {', '.join(unknown)}")
    genesis = load_genesis(consortium.genesis_file)
    sim_keys = settings.state_dir / "simulate" / "keys"
    postgres = Postgres(settings)
    config = SimConfig(
        bootstrap=settings.bootstrap_servers,
        prefix=settings.topic_prefix,
        chain_id=genesis.params.chain_id,
        genesis=genesis,
        validator_sets=read.validator_set_source(postgres.dsn(database_name(wanted[0]))),
        governance_keys={
            i: load_governance_key(consortium.home / "keys" / f"{i}.json") for i in wanted
        },
        service_keys={i: service_key(sim_keys / f"{i}.json") for i in wanted},
        members=len(members),
        threshold_num=genesis.params.threshold_num,
        threshold_den=genesis.params.threshold_den,
        rate=args.rate,
        seconds=args.seconds,
        drain=args.drain,
        seed=args.seed,
    )
    return config, db_nonce_lookup({i: postgres.dsn(database_name(i)) for i in wanted})


def main(argv: Sequence[str] | None = None) -> int:
    """``pantheon simulate``: exit 0 after a clean stop (time up, SIGINT or SIGTERM), 2 when
    it could not run (D36)."""
    args = build_parser().parse_args(argv)
    if args.rate <= 0:
        print("pantheon simulate: error: --rate must be positive", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env()
        config, lookup = _config_from_local(args, settings)
    except (ValueError, OSError, KeyError) as exc:
        print(f"pantheon simulate: error: {one_line(exc)}", file=sys.stderr)
        return 2  # could not run (D36)
    progress = sys.stderr if sys.stderr.isatty() else None
    sim = Simulator(config, lookup, progress=progress)

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        sim.stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = sim.run()
    except Exception as exc:  # a broker that stops answering: one line, not its repr (D60)
        print(f"pantheon simulate: error: {describe(exc, settings)}", file=sys.stderr)
        return 2  # could not run (D36)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary), file=sys.stderr)
    return 0
