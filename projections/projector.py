"""The projector process of one institution: its own database, the chain projection, metrics.

``python -m projections.projector --institution X --genesis G --bootstrap B --prefix P --dsn DSN``

* ``--dsn`` reaches the PostgreSQL server (its ``dbname`` is only used to create databases);
  the projector writes to the institution's own database ``pantheon_<institution>`` (dashes
  become underscores; DESIGN.md section 6), created if missing, unless ``--dbname`` names
  another. Migrations of the ``chain`` namespace are applied at start (idempotent, locked).
* The chain projection runs in a :class:`~projections.runner.ProjectionRunner` until SIGTERM
  or SIGINT (exit 0). Other projections of the same database (the institution's IAM
  projection) can run beside it, each in its own runner thread: :func:`run` takes them.
* Exit codes: 0 stopped, 2 bad configuration (unreadable genesis, database projected from
  another genesis), 3 divergence (a certified block the core computes differently).
* ``--metrics-port`` serves Prometheus metrics: projected height, highest height seen on
  ``blocks``, rows written, skipped messages by reason.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import psycopg
from prometheus_client import Gauge
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ledger.context import is_slug
from ledger.errors import LedgerError
from ledger.genesis import Genesis
from projections.chain import COUNTER_REASONS, ChainProjection, Diverged, GenesisMismatch
from projections.iam import IamProjection
from projections.iam_certified import CertifiedSigners
from projections.migrate import apply_migrations
from projections.objects import ObjectsProjection
from projections.runner import Projection, ProjectionRunner
from runtime import logs
from runtime.cli_args import ConfigError, Parser, add_chain_options, add_process_options
from runtime.metrics_server import serve_metrics
from runtime.startup import read_genesis, refuse, require_broker

log = logging.getLogger("pantheon.projector")

CHAIN_MIGRATIONS = Path(__file__).resolve().parent / "migrations" / "chain"
EXIT_OK, EXIT_CONFIG, EXIT_DIVERGED = 0, 2, 3

PROJECTED_HEIGHT = Gauge(
    "pantheon_projection_height", "Last block projected into Postgres", ["institution"]
)
SEEN_HEIGHT = Gauge(
    "pantheon_projection_seen_height", "Highest final height seen on blocks", ["institution"]
)
ROWS = Gauge("pantheon_projection_rows", "Rows written since start", ["institution"])
SKIPPED = Gauge(
    "pantheon_projection_skipped",
    "Messages skipped or checked, by reason",
    ["institution", "reason"],
)


def database_name(institution: str) -> str:
    """``pantheon_<institution>`` with dashes as underscores; the id must be a slug."""
    if not is_slug(institution):
        raise ConfigError(f"institution id {institution!r} is not a slug ([a-z0-9-], 1-63)")
    return "pantheon_" + institution.replace("-", "_")


def database_dsn(dsn: str, dbname: str) -> str:
    """``dsn`` pointing at database ``dbname``."""
    return make_conninfo(dsn, dbname=dbname)


def ensure_database(dsn: str, dbname: str) -> str:
    """Create ``dbname`` on the server of ``dsn`` unless it exists; returns its DSN."""
    admin = dsn if conninfo_to_dict(dsn).get("dbname") else make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
            return database_dsn(dsn, dbname)
        # another process may create it at the same moment
        with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return database_dsn(dsn, dbname)


def migrate(dsn: str) -> list[str]:
    """Apply the chain migrations to the database of ``dsn``."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        return apply_migrations(conn, "chain", CHAIN_MIGRATIONS)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectorConfig:
    """Everything a projector process needs."""

    institution: str
    genesis: Path
    bootstrap: str
    prefix: str = "pantheon."
    dsn: str
    dbname: str | None = None
    metrics_port: int | None = None
    batch_size: int = 2000

    def database(self) -> str:
        """The database this projector writes."""
        return self.dbname or database_name(self.institution)


def prepare(config: ProjectorConfig) -> tuple[ChainProjection, ProjectionRunner]:
    """Database created and migrated, genesis read: the projection and its runner."""
    try:
        genesis = Genesis.decode(config.genesis.read_bytes())
    except (OSError, LedgerError) as exc:
        raise ConfigError(f"cannot read genesis {config.genesis}: {exc}") from exc
    dsn = ensure_database(config.dsn, config.database())
    migrate(dsn)
    projection = ChainProjection(genesis, config.prefix)
    runner = ProjectionRunner(
        dsn,
        config.bootstrap,
        projection,
        batch_size=config.batch_size,
        group=f"projection-{config.institution}-{projection.name}",
    )
    return projection, runner


def publish_metrics(institution: str, projection: ChainProjection) -> None:
    """Copy the projection's figures into the Prometheus gauges."""
    PROJECTED_HEIGHT.labels(institution).set(projection.height)
    SEEN_HEIGHT.labels(institution).set(projection.highest_seen)
    ROWS.labels(institution).set(projection.rows_written)
    for reason in {*COUNTER_REASONS, *projection.counters}:  # every known reason, 0 or more
        SKIPPED.labels(institution, reason).set(projection.counters[reason])


def run(
    config: ProjectorConfig,
    stop: threading.Event | None = None,
    extra: Sequence[Projection] = (),
) -> int:
    """Project until ``stop`` is set; returns the process exit code. ``extra`` projections
    (same database) run in their own runner threads."""
    stop = stop or threading.Event()
    try:
        projection, runner = prepare(config)
        require_broker(config.bootstrap)
    except (ConfigError, psycopg.Error) as exc:  # one line (a log line would say it twice)
        return refuse("projector", exc)
    publish_metrics(config.institution, projection)  # every series from the start
    if config.metrics_port is not None:
        serve_metrics(config.metrics_port)
    try:
        with psycopg.connect(runner.dsn, autocommit=True, connect_timeout=10) as conn:
            for extra_projection in extra:
                migrate_extra = getattr(extra_projection, "migrate", None)
                if migrate_extra is not None:
                    migrate_extra(conn)
    except psycopg.Error as exc:
        log.error("cannot migrate projections", extra={"error": str(exc)})
        return EXIT_CONFIG
    threads = [
        threading.Thread(
            target=ProjectionRunner(runner.dsn, config.bootstrap, p).run,
            args=(stop,),
            name=f"projection-{p.name}",
            daemon=True,
        )
        for p in extra
    ]
    for thread in threads:
        thread.start()
    try:
        while not stop.is_set():
            try:
                runner.step(0.5)
            except psycopg.OperationalError as exc:
                log.warning("database unavailable, retrying", extra={"error": str(exc)})
                runner.close()
                stop.wait(1.0)
            publish_metrics(config.institution, projection)
    except GenesisMismatch as exc:
        log.error("wrong genesis for this database", extra={"error": str(exc)})
        return EXIT_CONFIG
    except Diverged as exc:
        log.critical("DIVERGED: projection stopped", extra={"error": str(exc)})
        return EXIT_DIVERGED
    finally:
        stop.set()
        runner.close()
        for thread in threads:
            thread.join(10)
    return EXIT_OK


def build_parser(
    *, add_help: bool = True, prog: str = "pantheon projector", description: str | None = None
) -> argparse.ArgumentParser:
    """Arguments shared by ``pantheon projector`` and ``pantheon projections rebuild``."""
    p = Parser(prog=prog, add_help=add_help, description=description or __doc__.splitlines()[0])
    p.add_argument("--institution", required=True, help="institution id (its database)")
    add_chain_options(p)
    p.add_argument(
        "--dsn", required=True, help="PostgreSQL server connection string (password: PGPASSWORD)"
    )
    p.add_argument("--dbname", default=None, help="database (default pantheon_<institution>)")
    p.add_argument("--batch-size", type=int, default=2000, help="messages per transaction")
    add_process_options(p, verbose=add_help)
    return p


def config_from_args(args: argparse.Namespace) -> ProjectorConfig:
    """A config from parsed arguments."""
    return ProjectorConfig(
        institution=args.institution,
        genesis=args.genesis,
        bootstrap=args.bootstrap,
        prefix=args.prefix,
        dsn=args.dsn,
        dbname=args.dbname,
        metrics_port=args.metrics_port,
        batch_size=args.batch_size,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m projections.projector`` (and ``pantheon projector``)."""
    args = build_parser().parse_args(argv)
    logs.configure(verbose=args.verbose)
    try:
        config = config_from_args(args)
        config.database()
        genesis = read_genesis(config.genesis)
    except ConfigError as exc:
        print(f"pantheon projector: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # the institution's users; its signers are the keys the certified chain names (D21),
    # believed from the chain tables only with a certificate verified from the genesis (D75)
    signers = CertifiedSigners(genesis, institution=config.institution)
    iam = IamProjection(config.institution, prefix=config.prefix, signers=signers)
    # its stored objects' rows (D23), from the object events the IAM projection accepted
    objects = ObjectsProjection(config.institution, prefix=config.prefix)
    return run(config, stop, extra=[iam, objects])


if __name__ == "__main__":
    sys.exit(main())
