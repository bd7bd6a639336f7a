"""``pantheon audit``: replay every ledger log into a fresh state and check everything.n DSN]
[--json PATH] [--at-height H] [--checkpoint SNAPSHOT] [--workers N]``

Theory of operation
-------------------
* The end offset of each log is taken once, in the order ``receipts``, ``blocks``, ``votes``,
  ``tx``: a receipt follows its block, a block its votes, a vote its transactions, so every
  fact read refers to messages that are also read (what arrives later waits for the next run).
* ``blocks`` and ``votes`` are read whole, then ``tx`` is streamed from offset 0 (or from a
  trusted checkpoint, a validator snapshot) through :class:`ledger.audit.ChainAudit`, which
  re-executes every block with the core and checks every copy, certificate, vote and
  receipt; then ``receipts`` is streamed.
* With ``--workers N`` (default: one per core; 0 or 1: none) the transactions' Ed25519
  signatures are verified ahead of the replay in N worker processes
  (:mod:`streams.signature_pipeline`), overlapping the serial cutting, execution and certificate
  checks; the core skips the verify call only for envelopes a worker verified, and checks
  everything else itself, so the findings are the same.
* With ``--institution`` (and ``--dsn`` reaching its PostgreSQL server), the institution's
  ``chain`` tables are read first, in one snapshot at projected height ``P``, and compared
  with the rows the projector's own row builder makes from the replay up to ``P``
  (:mod:`readers.audit_projection`); Layer-2 leaves are checked when that store exists, and
  the stored objects' rows, grants and chunks against the IAM topic and the anchors
  (:mod:`readers.audit_objects`, D23).
* Output: a human report on stdout, a JSON report with ``--json PATH`` (``-`` for stdout), a
  progress bar on stderr when it is a terminal (``--progress`` forces it). Exit code 0 when
  clean, 1 on any discrepancy (a finding of severity ``error``), 2 when the audit could not
  run (bad arguments, unreadable genesis, broker or database unreachable).
* ``--at-height H`` replays up to block ``H`` only and shows the state there (time travel):
  the header, the validator set, record counts per kind, and every record in the JSON.
* ``--every SECONDS`` repeats the audit, and ``--metrics-port`` serves the audit's metrics
  (:mod:`readers.audit_metrics`) for Prometheus. It first checks that the database server
  and a broker answer (else one line, exit 2); a run that cannot run (a projection not made
  yet) is retried at the next period.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from psycopg.conninfo import make_conninfo

from readers import audit_metrics
from readers.audit_config import AuditConfig, AuditError
from readers.audit_logs import Progress
from readers.audit_report import AuditReport, render, write_json
from readers.audit_run import run_audit
from runtime import logs
from runtime.cli_args import (
    ConfigError,
    Defaults,
    Parser,
    add_chain_options,
    add_process_options,
    apply_defaults,
    one_line,
)
from runtime.metrics_server import serve_metrics
from runtime.startup import refuse, require_broker, require_database

__all__ = [
    "EXIT_CLEAN",
    "EXIT_DISCREPANCIES",
    "EXIT_ERROR",
    "AuditConfig",
    "AuditError",
    "AuditReport",
    "Progress",
    "build_parser",
    "main",
    "publish",
    "render",
    "run_audit",
    "write_json",
]

log = logging.getLogger("pantheon.audit")

EXIT_CLEAN, EXIT_DISCREPANCIES, EXIT_ERROR = 0, 1, 2


def publish(report: AuditReport, institution: str | None, outcome: str) -> None:
    """The run's figures into the Prometheus gauges."""
    projection = None
    if report.projection is not None and institution is not None:
        projection = (institution, int(report.projection["projected_height"]))
    audit_metrics.publish(
        errors_by_check=report.errors_by_check(),
        by_severity=report.severity_counts(),
        audited_height=report.audited_height,
        duration=report.duration,
        rate=report.tx_rate,
        codes=report.codes,
        log_ends={t: b for t, (_, b) in report.log_ranges.items()},
        finished_at=time.time(),
        outcome=outcome,
        projection=projection,
    )


def build_parser(defaults: Defaults | None = None) -> argparse.ArgumentParser:
    """Arguments of ``pantheon audit`` (``defaults``: options the caller fills)."""
    p = Parser(
        prog="pantheon audit",
        description=__doc__.splitlines()[0] + " (exit 0 clean, 1 discrepancies, 2 could not run)",
    )
    add_chain_options(p)
    p.add_argument("--institution", help="also audit this institution's Postgres projection")
    p.add_argument(
        "--dsn",
        help="PostgreSQL server connection string, with --institution; password from "
        "PGPASSWORD (the local stack's is in <state>/postgres/password)",
    )
    p.add_argument("--dbname", help="projection database (default pantheon_<institution>)")
    p.add_argument("--json", metavar="PATH", help="write the JSON report here ('-': stdout)")
    p.add_argument("--at-height", type=int, metavar="H", help="replay to H and show the state")
    p.add_argument("--checkpoint", type=Path, help="trusted validator snapshot to start from")
    p.add_argument("--timeout", type=float, default=30.0, help="broker wait, seconds")
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes verifying signatures (default: one per core; 0 or 1: none)",
    )
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", action="store_true", default=None, help="force the bar")
    bar.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("-q", "--quiet", action="store_true", help="no human report")
    p.add_argument("--every", type=float, metavar="SECONDS", help="repeat the audit forever")
    add_process_options(p, verbose_help="list every notice, and log progress")
    apply_defaults(p, defaults)
    return p


def main(argv: Sequence[str] | None = None, *, defaults: Defaults | None = None) -> int:
    """Entry point of ``pantheon audit`` / ``python -m readers.audit``."""
    args = build_parser(defaults).parse_args(argv)
    logs.configure(verbose=args.verbose)
    if args.at_height is not None and args.at_height < 0:
        print("pantheon audit: error: --at-height must be >= 0", file=sys.stderr)
        return EXIT_ERROR
    if args.workers is not None and args.workers < 0:
        print("pantheon audit: error: --workers must be >= 0", file=sys.stderr)
        return EXIT_ERROR
    if args.dsn is not None and args.institution is None:
        print("pantheon audit: error: --dsn needs --institution", file=sys.stderr)
        return EXIT_ERROR
    config = AuditConfig(
        genesis=args.genesis,
        bootstrap=args.bootstrap,
        prefix=args.prefix,
        institution=args.institution,
        dsn=args.dsn,
        dbname=args.dbname,
        at_height=args.at_height,
        checkpoint=args.checkpoint,
        timeout=args.timeout,
        workers=args.workers,
        progress=sys.stderr.isatty() if args.progress is None else args.progress,
    )
    if args.metrics_port is not None:
        serve_metrics(args.metrics_port)
    stop = threading.Event()
    if args.every is not None:

        def on_signal(_signum: int, _frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    if args.every is not None:  # a continuous auditor: bad settings now, in one line (D49)
        try:
            if args.dsn is not None:
                require_database(make_conninfo(args.dsn, dbname="postgres"))
            require_broker(args.bootstrap)
        except ConfigError as exc:
            return refuse("audit", exc)
    while True:
        code = _run_once(config, args)
        if args.every is None or stop.wait(args.every):
            return code


def _run_once(config: AuditConfig, args: argparse.Namespace) -> int:
    try:
        report = run_audit(config)
    except AuditError as exc:  # one line on stderr (a log line too would say it twice)
        print(f"pantheon audit: error: {one_line(exc)}", file=sys.stderr, flush=True)
        audit_metrics.RUNS.labels("failed").inc()
        return EXIT_ERROR
    publish(report, config.institution, "clean" if report.clean else "discrepancies")
    if args.quiet and not report.clean:  # a continuous auditor's log says when it finds some
        found = {"errors": report.errors_by_check(), "height": report.audited_height}
        log.warning("discrepancies", extra=found)
    if not args.quiet:  # beside a JSON report on stdout, the human one goes to stderr
        text = render(report, verbose=args.verbose)
        print(text, flush=True, file=sys.stderr if args.json == "-" else sys.stdout)
    if args.json:
        write_json(report, args.json)
    return EXIT_CLEAN if report.clean else EXIT_DISCREPANCIES


if __name__ == "__main__":
    sys.exit(main())
