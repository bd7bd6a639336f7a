"""The command line of the Layer-2 batcher (``pantheon batcher``)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from psycopg.conninfo import make_conninfo

from ledger.genesis import Genesis
from ledger.keys import KeyPair
from readers.batcher.config import BatcherConfig
from readers.batcher.metrics import export_at_zero
from readers.batcher.process import Batcher
from runtime import logs
from runtime.cli_args import ConfigError, Parser
from runtime.metrics_server import serve_metrics
from runtime.startup import refuse, require_broker
from runtime.topics import DEFAULT_PREFIX

DESCRIPTION = (
    "The Layer-2 batcher of one institution (``pantheon batcher``): device records to CommitBatch."
)
EXIT_OK, EXIT_CONFIG = 0, 2


def load_signing_key(keystore: Path | None, key_file: Path | None) -> KeyPair:
    """The batcher's key: a key file (a SERVICE identity) or the keystore's governance key."""
    path = key_file or keystore
    if path is None:
        raise ValueError("give --key (a SERVICE identity) or --keystore (governance key)")
    if path.stat().st_mode & 0o077:
        raise ValueError(f"{path} is readable by others; chmod 600")
    doc = json.loads(path.read_text())
    seed = doc["seed"] if key_file is not None else doc["governance"]["seed"]
    return KeyPair.from_seed(bytes.fromhex(seed))


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``pantheon batcher``."""
    p = Parser(prog="pantheon batcher", description=DESCRIPTION)
    p.add_argument("--institution", required=True)
    p.add_argument("--genesis", type=Path, required=True, help="genesis.avro (chain id)")
    p.add_argument("--keystore", type=Path, help="institution keystore (governance key)")
    p.add_argument("--key", type=Path, help="key file of a SERVICE identity (preferred)")
    p.add_argument("--bootstrap", default="127.0.0.1:19092")
    p.add_argument("--prefix", default=DEFAULT_PREFIX)
    p.add_argument("--dsn", required=True, help="PostgreSQL server (password via PGPASSWORD)")
    p.add_argument("--dbname", help="database (default pantheon_<institution>)")
    p.add_argument("--group", default="")
    p.add_argument(
        "--instance-id",
        default="",
        help="static group member id, stable across restarts of this process (one per process)",
    )
    p.add_argument("--max-records", type=int, default=5000)
    p.add_argument("--window-ms", type=int, default=1000)
    p.add_argument("--workers", type=int, default=None, help="signature verify workers")
    p.add_argument("--processes", action="store_true", help="verify in processes, not threads")
    p.add_argument("--metrics-port", type=int)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> BatcherConfig:
    """A :class:`BatcherConfig` from parsed arguments."""
    genesis = Genesis.decode(args.genesis.read_bytes())
    dbname = args.dbname or "pantheon_" + args.institution.replace("-", "_")
    return BatcherConfig(
        institution=args.institution,
        key=load_signing_key(args.keystore, args.key),
        chain_id=genesis.params.chain_id,
        genesis=genesis,
        bootstrap=args.bootstrap,
        dsn=make_conninfo(args.dsn, dbname=dbname),
        prefix=args.prefix,
        group=args.group,
        max_records=args.max_records,
        window_ms=args.window_ms,
        verify_workers=args.workers,
        verify_processes=args.processes,
        instance_id=args.instance_id,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m readers.batcher`` (wire as ``pantheon batcher``)."""
    args = build_parser().parse_args(argv)
    logs.configure(verbose=args.verbose)
    try:
        config = config_from_args(args)
        require_broker(config.bootstrap)  # one line now, rather than waiting for it forever
    except OSError as exc:
        what = f"cannot read {exc.filename}: {exc.strerror}" if exc.filename else str(exc)
        print(f"pantheon batcher: error: {what}", file=sys.stderr)
        return EXIT_CONFIG
    except (ConfigError, ValueError, KeyError) as exc:
        return refuse("batcher", exc)
    if args.metrics_port:
        serve_metrics(args.metrics_port)
    export_at_zero(config.institution)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    Batcher(config).run(stop)
    return EXIT_OK
