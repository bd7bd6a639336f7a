"""Drop an institution's chain tables and project them again from offset 0, then its IAM.

``python -m projections.rebuild --institution X --genesis G --bootstrap B --prefix P --dsn DSN``

Theory of operation: under the chain projection's runner lock (so a running projector makes
the rebuild fail instead of racing it), the ``chain`` schema, the projection's stored
positions and its ``schema_migrations`` rows are dropped in one transaction; the migrations
are applied again and the ordinary runner projects from offset 0 until it has consumed what
the topics held when the rebuild started, showing a progress bar on stderr. Because every row
is a function of the logs alone (no clock, no arrival order), the result equals, row for row,
what the incremental projector wrote. Then the institution's IAM projection is emptied and
projected again from its topic with the same signature and append-time checks (D21, D56)
against the rebuilt chain (:func:`rebuild_iam`); its gateway-owned tables (data keys,
signing keys, setup) stay.
Last the stored objects' metadata and grants (``objects.objects``, ``objects.grants``) are
projected again from the object events the rebuilt IAM projection accepted
(:func:`projections.objects.rebuild`, D23); their chunks and upload state exist only in
PostgreSQL and are kept.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

import psycopg
from confluent_kafka import Consumer, KafkaException, TopicPartition

from projections.chain import NAME, Diverged, GenesisMismatch
from projections.iam import IamProjection
from projections.iam import migrate as iam_migrate
from projections.iam import reset as iam_reset
from projections.iam_certified import CertifiedSigners
from projections.objects import rebuild as objects_rebuild
from projections.projector import (
    EXIT_CONFIG,
    EXIT_DIVERGED,
    EXIT_OK,
    ProjectorConfig,
    build_parser,
    config_from_args,
    ensure_database,
    prepare,
)
from projections.runner import ProjectionRunner
from runtime import logs
from runtime.cli_args import ConfigError, Defaults, apply_defaults, one_line
from runtime.kafka_config import consumer_config
from runtime.startup import read_genesis

_LOCK_SALT = "pantheon.projection:"


class RebuildError(RuntimeError):
    """The rebuild cannot proceed (a projector is running)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RebuildResult:
    """What a rebuild did."""

    height: int
    messages: int
    rows: int
    seconds: float


def drop_chain(dsn: str) -> None:
    """Drop the chain tables, positions and migration records (fails if a projector runs)."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        locked = conn.execute(
            "SELECT pg_try_advisory_lock(hashtext(%s))", (_LOCK_SALT + NAME,)
        ).fetchone()
        if not locked or not locked[0]:
            raise RebuildError("a projector is running on this database; stop it first")
        with conn.transaction():
            conn.execute("DROP SCHEMA IF EXISTS chain CASCADE")
            for table, column in (
                ("projection_positions", "projection"),
                ("schema_migrations", "namespace"),
            ):
                exists = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
                if exists and exists[0] is not None:
                    conn.execute(
                        psycopg.sql.SQL("DELETE FROM {} WHERE {} = %s").format(
                            psycopg.sql.Identifier(table), psycopg.sql.Identifier(column)
                        ),
                        (NAME,),
                    )


def _ends(bootstrap: str, topics: Sequence[str]) -> dict[str, int]:
    consumer = Consumer(consumer_config(bootstrap, "projection-rebuild-probe"))
    try:
        return {
            t: consumer.get_watermark_offsets(TopicPartition(t, 0), timeout=10, cached=False)[1]
            for t in topics
        }
    finally:
        consumer.close()


def _bar(out: TextIO, done: int, total: int, height: int, rate: float) -> None:
    width = 30
    fraction = 1.0 if total <= 0 else min(1.0, done / total)
    filled = int(width * fraction)
    out.write(
        f"\rrebuilding [{'#' * filled}{'.' * (width - filled)}] {fraction:6.1%} "
        f"height {height} {rate:,.0f} msg/s"
    )
    out.flush()


def rebuild(config: ProjectorConfig, *, out: TextIO | None = None) -> RebuildResult:
    """Drop and re-project the chain tables of ``config``'s database; see module docstring."""
    began = time.monotonic()
    _ends(config.bootstrap, [f"{config.prefix}tx"])  # the broker answers before data is dropped
    drop_chain(ensure_database(config.dsn, config.database()))
    projection, runner = prepare(config)
    try:
        ends = _ends(config.bootstrap, projection.topics())
        total = sum(ends.values())
        last_draw = 0.0
        while True:
            runner.step(0.5)
            positions = runner.positions()
            done = sum(min(positions.get((t, 0), 0), end) for t, end in ends.items())
            now = time.monotonic()
            if out is not None and (now - last_draw > 0.2 or done >= total):
                _bar(out, done, total, projection.height, runner.messages / max(now - began, 1e-6))
                last_draw = now
            if done >= total:
                break
        if out is not None:
            out.write("\n")
        return RebuildResult(
            height=projection.height,
            messages=runner.messages,
            rows=projection.rows_written,
            seconds=time.monotonic() - began,
        )
    finally:
        runner.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class IamRebuildResult:
    """What the IAM part of a rebuild did."""

    messages: int
    applied_to: int  # next offset of the IAM topic the rebuilt projection holds
    end: int  # end of the IAM topic when its rebuild began
    rejected: dict[str, int]


def rebuild_iam(
    config: ProjectorConfig, *, wait_s: float = 10.0, out: TextIO | None = None
) -> IamRebuildResult:
    """Empty the institution's IAM projection and project its topic again from offset 0
    with the same signature rules (D21), against the chain just rebuilt. Stops at the
    topic's end, or after ``wait_s`` without progress (an event waiting for a height the
    chain has not reached: the projector finishes it)."""
    dsn = ensure_database(config.dsn, config.database())
    signers = CertifiedSigners(read_genesis(config.genesis), institution=config.institution)
    projection = IamProjection(config.institution, prefix=config.prefix, signers=signers)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        locked = conn.execute(
            "SELECT pg_try_advisory_lock(hashtext(%s))", (_LOCK_SALT + projection.name,)
        ).fetchone()
        if not locked or not locked[0]:
            raise RebuildError("an IAM projection is running on this database; stop it first")
        iam_migrate(conn)
        iam_reset(conn, config.institution)
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (_LOCK_SALT + projection.name,))
    try:
        end = _ends(config.bootstrap, projection.topics())[projection.topic]
    except KafkaException as exc:  # no IAM topic: nothing to project (the tables are empty)
        if out is not None:
            out.write(f"no IAM topic {projection.topic}: {exc}\n")
        return IamRebuildResult(messages=0, applied_to=0, end=0, rejected={})
    runner = ProjectionRunner(dsn, config.bootstrap, projection, batch_size=config.batch_size)
    try:
        last_progress = time.monotonic()
        while True:
            done = runner.positions().get((projection.topic, 0), 0)
            if done >= end or time.monotonic() - last_progress > wait_s:
                break
            if runner.step(0.2):
                last_progress = time.monotonic()
        if out is not None and done < end:
            out.write(
                f"IAM projection stopped at offset {done} of {end}: an event waits for "
                f"chain height {projection.waiting_for}\n"
            )
        return IamRebuildResult(
            messages=runner.messages, applied_to=done, end=end, rejected=dict(projection.rejected)
        )
    finally:
        runner.close()


DESCRIPTION = (
    "DROP an institution's chain projection (the chain schema of its database) and project it "
    "again from offset 0 of the ledger topics, then its IAM projection and its stored objects' "
    "rows; the result equals what the incremental projector wrote. Its projector must be "
    "stopped first (pantheon stop projector --institution X) and started after. Exit 0 done, "
    "2 could not run, 3 diverged."
)


def rebuild_parser(defaults: Defaults | None = None) -> argparse.ArgumentParser:
    """Arguments of ``pantheon projections rebuild`` (the projector's, described anew)."""
    parser = build_parser(prog="pantheon projections rebuild", description=DESCRIPTION)
    for action in parser._actions:  # --metrics-port: a projector-process option
        if action.dest == "metrics_port":
            action.help = argparse.SUPPRESS
    apply_defaults(parser, defaults)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    defaults: Defaults | None = None,
    stop_projector: str | None = None,
) -> int:
    """Entry point of ``python -m projections.rebuild`` (``pantheon projections rebuild``);
    ``stop_projector``: the command that stops the projector, for the error that asks to."""
    args = rebuild_parser(defaults).parse_args(argv)
    logs.configure(verbose=args.verbose)
    try:
        config = config_from_args(args)
        result = rebuild(config, out=sys.stderr)
        iam = rebuild_iam(config, out=sys.stderr)
        # The stored objects' metadata and grants (D23), from the object events the rebuilt
        # IAM projection accepted; chunks and uploads stay.
        objects_rebuild(
            ensure_database(config.dsn, config.database()),
            config.bootstrap,
            config.institution,
            config.prefix,
            end=iam.applied_to,
        )
    except RebuildError as exc:
        hint = f": {stop_projector}" if stop_projector else ""
        print(f"pantheon projections rebuild: error: {exc}{hint}", file=sys.stderr)
        return EXIT_CONFIG
    except (ConfigError, GenesisMismatch, psycopg.Error) as exc:
        print(f"pantheon projections rebuild: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    except KafkaException as exc:
        what = f"cannot reach Kafka at {args.bootstrap}: {one_line(exc)}"
        print(f"pantheon projections rebuild: error: {what}", file=sys.stderr)
        return EXIT_CONFIG
    except Diverged as exc:
        print(f"pantheon projections rebuild: DIVERGED: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    print(
        f"rebuilt {config.database()}: height {result.height}, {result.messages} messages, "
        f"{result.rows} rows in {result.seconds:.1f}s"
    )
    refused = ", ".join(f"{n} {r}" for r, n in sorted(iam.rejected.items())) or "none"
    print(
        f"rebuilt the IAM projection of {config.institution}: {iam.messages} events to offset "
        f"{iam.applied_to} of {iam.end}, refused: {refused}"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
