"""``pantheon audit``: replay every ledger log into a fresh state and check everything.

``python -m readers.audit --genesis G --bootstrap B [--prefix P] [--institution X --dsn DSN]
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
  (:mod:`readers.audit_metrics`) for Prometheus.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from ledger.audit import ERROR, INFO, WARNING, ChainAudit, Finding, show, state_summary
from ledger.errors import LedgerError
from ledger.genesis import Genesis
from ledger.snapshot import decode_snapshot
from readers import audit_metrics
from runtime import logs
from runtime.cli_args import Defaults, Parser, apply_defaults, one_line
from runtime.kafka_config import consumer_config
from runtime.metrics_server import serve_metrics
from streams.signature_pipeline import SignaturePipeline, default_workers

if TYPE_CHECKING:
    from readers.audit_projection import ProjectionSnapshot

log = logging.getLogger("pantheon.audit")

EXIT_CLEAN, EXIT_DISCREPANCIES, EXIT_ERROR = 0, 1, 2
TOPICS = ("receipts", "blocks", "votes", "tx")  # end offsets are taken in this order


class AuditError(RuntimeError):
    """The audit could not run (configuration, broker, database)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditConfig:
    """Everything one audit run needs."""

    genesis: Path
    bootstrap: str
    prefix: str = "pantheon."
    institution: str | None = None
    dsn: str | None = None
    dbname: str | None = None
    at_height: int | None = None
    checkpoint: Path | None = None
    timeout: float = 30.0
    progress: bool = False
    workers: int | None = None  # signature workers: None = one per core, 0 or 1 = in-process

    @property
    def signature_workers(self) -> int:
        """Worker processes verifying signatures (0: the replay verifies them itself)."""
        workers = default_workers() if self.workers is None else self.workers
        return workers if workers > 1 else 0


@dataclass(slots=True)
class AuditReport:
    """What a run found; :meth:`as_dict` is the JSON report."""

    chain_id: str
    genesis_hash: bytes
    prefix: str
    started_at: float
    duration: float = 0.0
    replay_seconds: float = 0.0
    log_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    replayed_height: int = 0
    audited_height: int = 0
    checkpoint_height: int = 0
    transactions: int = 0
    signature_workers: int = 0
    signature_wait: float = 0.0  # seconds the replay waited for the signature workers
    codes: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    membership: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    projection: dict[str, Any] | None = None
    at_height: dict[str, Any] | None = None

    def severity_counts(self) -> dict[str, int]:
        """Findings per severity (capped kinds counted in full)."""
        counts = Counter(f.severity for f in self.findings)
        sev = {f.kind: f.severity for f in self.findings}
        for kind, extra in self.dropped.items():
            counts[sev[kind]] += extra
        return {s: counts.get(s, 0) for s in (ERROR, WARNING, INFO)}

    @property
    def clean(self) -> bool:
        return self.severity_counts()[ERROR] == 0

    @property
    def tx_rate(self) -> float:
        return self.transactions / self.replay_seconds if self.replay_seconds > 0 else 0.0

    def errors_by_check(self) -> dict[str, int]:
        """Errors per check (for metrics)."""
        return dict(Counter(f.check for f in self.findings if f.severity == ERROR))

    def as_dict(self) -> dict[str, Any]:
        return {
            "result": "clean" if self.clean else "discrepancies",
            "chain_id": self.chain_id,
            "genesis_hash": self.genesis_hash.hex(),
            "prefix": self.prefix,
            "started_at": self.started_at,
            "duration_seconds": round(self.duration, 3),
            "transactions_per_second": round(self.tx_rate, 1),
            "logs": {t: {"from": a, "to": b} for t, (a, b) in self.log_ranges.items()},
            "replayed_height": self.replayed_height,
            "audited_height": self.audited_height,
            "checkpoint_height": self.checkpoint_height,
            "transactions": self.transactions,
            "signature_workers": self.signature_workers,
            "signature_wait_seconds": round(self.signature_wait, 3),
            "result_codes": self.codes,
            "counts": self.counts,
            "membership": self.membership,
            "summary": self.severity_counts(),
            "findings": [f.as_dict() for f in self.findings],
            "findings_not_listed": self.dropped,
            "projection": self.projection,
            "at_height": self.at_height,
        }


class Progress:
    """A one-line progress bar on a terminal (throttled to 5 updates a second)."""

    def __init__(self, enabled: bool, stream: IO[str] | None = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self._last = 0.0

    def update(self, stage: str, done: int, total: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.2):
            return
        self._last = now
        frac = done / total if total else 1.0
        bar = "#" * int(30 * frac)
        self.stream.write(f"\r{stage:<9}[{bar:<30}] {100 * frac:5.1f}% {done:,}/{total:,}   ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _consumer(config: AuditConfig) -> Consumer:
    return Consumer(consumer_config(
        config.bootstrap, f"audit-{uuid.uuid4().hex[:12]}",
        **{"fetch.max.bytes": 64 << 20, "max.partition.fetch.bytes": 16 << 20,
           "fetch.wait.max.ms": 10, "queued.min.messages": 500_000}))  # fmt: skip


def _read(
    consumer: Consumer,
    topic: str,
    span: tuple[int, int],
    on_message: Callable[[int, int, bytes], bool],
    *,
    progress: Callable[[int], None],
    timeout: float,
) -> int:
    """Feed messages ``[start, end)`` of partition 0 (``consumer`` is assigned there already);
    stops early when ``on_message`` says False. Returns the last offset fed."""
    start, end = span
    last = start - 1
    idle_since = time.monotonic()
    while last < end - 1:
        batch = consumer.consume(num_messages=10000, timeout=0.2)
        if not batch:
            if time.monotonic() - idle_since > timeout:
                raise AuditError(f"{topic}: no message for {timeout:.0f}s at offset {last + 1}")
            continue
        idle_since = time.monotonic()
        for msg in batch:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise AuditError(f"reading {topic}: {err}")
            offset = msg.offset()
            assert offset is not None
            if offset >= end:
                return last
            last = offset
            if not on_message(offset, msg.timestamp()[1], msg.value() or b""):
                return last
        progress(last + 1)
    return last


def run_audit(config: AuditConfig) -> AuditReport:  # noqa: PLR0915 (one linear procedure)
    """One audit run; raises :class:`AuditError` if it cannot run."""
    started, clock = time.time(), time.monotonic()
    try:
        genesis = Genesis.decode(config.genesis.read_bytes())
    except (OSError, LedgerError) as exc:
        raise AuditError(f"cannot read genesis {config.genesis}: {exc}") from exc
    checkpoint = None
    if config.checkpoint is not None:
        if config.institution is not None:
            raise AuditError("the projection check needs a replay from offset 0 (no checkpoint)")
        try:
            checkpoint = decode_snapshot(config.checkpoint.read_bytes())
        except (OSError, LedgerError) as exc:
            raise AuditError(f"cannot read checkpoint {config.checkpoint}: {exc}") from exc
        if checkpoint[1].chain_id != genesis.params.chain_id:
            raise AuditError("the checkpoint is of another chain")
    topics = {t: f"{config.prefix}{t}" for t in TOPICS}
    report = AuditReport(chain_id=genesis.params.chain_id, genesis_hash=genesis.hash(),
                         prefix=config.prefix, started_at=started)  # fmt: skip

    audit = ChainAudit(genesis, topics=topics, checkpoint=checkpoint,
                       stop_height=config.at_height)  # fmt: skip
    report.checkpoint_height = audit.start_height
    report.signature_workers = config.signature_workers
    pipeline = _signature_pipeline(audit, report.signature_workers)  # they start meanwhile

    # 1. the projection first (its height bounds what the logs must contain)
    snapshot = expected = db_dsn = None
    if config.institution is not None:
        try:
            db_dsn, snapshot = _read_projection(config)
        except BaseException:
            if pipeline is not None:
                pipeline.close()
            raise

    iam = _start_iam(config, pipeline)  # the IAM projection too, before the logs (D21)

    # 2. the logs' end offsets, in causal order
    consumers: dict[str, Consumer] = {}
    progress = Progress(config.progress)
    try:
        ends: dict[str, tuple[int, int]] = {}
        for name in TOPICS:
            consumers[name] = _consumer(config)
            try:
                ends[name] = consumers[name].get_watermark_offsets(
                    TopicPartition(topics[name], 0), timeout=config.timeout, cached=False
                )
            except KafkaException as exc:
                why = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else exc
                raise AuditError(
                    f"cannot reach the broker at {config.bootstrap} ({topics[name]}): {why}; is "
                    "Kafka up, and is --bootstrap right?"
                ) from exc
        starts = {"tx": audit.tx_offset, "votes": audit.votes_offset, "blocks": 0, "receipts": 0}
        for name, consumer in consumers.items():  # every log prefetches from now on
            if starts[name] < ends[name][1]:
                consumer.assign([TopicPartition(topics[name], 0, starts[name])])
        for name, (low, _) in ends.items():
            if low > starts[name]:
                audit.findings.add(Finding(
                    check="log", kind="log.truncated", severity=ERROR,
                    message=f"{topics[name]} starts at offset {low}: messages before it are "
                    "gone (ledger topics keep data forever)", topic=topics[name],
                    offset=low))  # fmt: skip
        if snapshot is not None and config.institution is not None:
            from readers import audit_projection as ap  # noqa: PLC0415

            expected = ap.ExpectedRows(genesis, audit.machine, snapshot.height)
            audit.on_block = expected
        if iam is not None:
            iam.watch(audit, genesis)  # key history from the certified blocks replayed
        block_messages: dict[int, bytes] = {}
        wanted_blocks = set(snapshot.pending_blocks) if snapshot else set()

        def on_block(offset: int, _ts: int, raw: bytes) -> bool:
            audit.add_block_copy(offset, raw)
            if offset in wanted_blocks:
                block_messages[offset] = raw
            return True

        def on_vote(offset: int, _ts: int, raw: bytes) -> bool:
            audit.add_vote(offset, raw)
            return True

        def on_tx(offset: int, ts: int, raw: bytes) -> bool:
            if pipeline is None:
                audit.feed_tx(offset, ts, raw)
            else:  # fed to the audit in order once a worker has checked its signature
                pipeline.add(offset, ts, raw)
            return not audit.done

        def on_receipt(offset: int, _ts: int, raw: bytes) -> bool:
            audit.feed_receipt(offset, raw)
            return True

        handlers = {"blocks": on_block, "votes": on_vote, "tx": on_tx, "receipts": on_receipt}
        if pipeline is not None:
            pipeline.wait_ready(config.timeout)
        replay_clock = time.monotonic()
        for name in ("blocks", "votes", "tx", "receipts"):
            start, end = starts[name], ends[name][1]

            def show_progress(done: int, name: str = name, end: int = end) -> None:
                progress.update(name, done, end)

            last = _read(consumers[name], topics[name], (start, end), handlers[name],
                         progress=show_progress, timeout=config.timeout)  # fmt: skip
            if name == "tx" and pipeline is not None:
                pipeline.flush()
                last = audit.last_tx_offset  # below ``last`` if the replay stopped at a height
                report.signature_wait = pipeline.waited
            progress.update(name, last + 1, end, force=True)
            report.log_ranges[topics[name]] = (start, last + 1)
            if name == "tx":
                report.replay_seconds = time.monotonic() - replay_clock
        progress.close()
    finally:
        if pipeline is not None:
            pipeline.close()
        for consumer in consumers.values():
            consumer.close()
    audit.finish()

    # 3. the projection, Layer 2 and stored objects
    if snapshot is not None and expected is not None and db_dsn is not None:
        from readers import audit_projection as ap  # noqa: PLC0415

        assert config.institution is not None
        result = ap.compare(config.institution, snapshot, expected, block_messages)
        for finding in result.findings:
            audit.findings.add(finding)
        report.projection = result.as_dict()
        _check_stores(audit, db_dsn, config.institution)
    accepted: tuple[tuple[int, str, dict[str, Any]], ...] = ()
    if iam is not None and report.projection is not None:
        iam_findings, report.projection["iam"] = iam.finish()
        for finding in iam_findings:
            audit.findings.add(finding)
        accepted = iam.accepted_events
    if snapshot is not None and expected is not None and db_dsn is not None:
        _check_objects(audit, db_dsn, config, accepted)

    report.replayed_height = audit.height
    report.audited_height = audit.audited_height
    report.codes = dict(audit.codes)
    report.transactions = sum(audit.codes.values())
    report.counts = dict(audit.counts)
    report.membership = [{"height": m.height, "members": list(m.members), "quorum": m.quorum,
                          "validator_set_hash": m.validator_set_hash.hex()}
                         for m in audit.membership]  # fmt: skip
    report.findings = list(audit.findings.items)
    report.dropped = audit.findings.dropped()
    if config.at_height is not None:
        report.at_height = _time_travel(audit, config.at_height)
    report.duration = time.monotonic() - clock
    return report


def _start_iam(config: AuditConfig, pipeline: SignaturePipeline | None) -> Any:
    """The IAM check (:mod:`readers.audit_iam`) of ``--institution``, its tables read now."""
    if config.institution is None:
        return None
    from readers import audit_iam  # noqa: PLC0415 (only for this check)

    try:
        return audit_iam.start(
            config.institution,
            lambda: _institution_dsn(config),
            config.bootstrap,
            config.prefix,
            config.timeout,
        )
    except audit_iam.IamAuditError as exc:
        if pipeline is not None:
            pipeline.close()
        raise AuditError(f"{config.institution}: IAM projection: {exc}") from exc


def _signature_pipeline(audit: ChainAudit, workers: int) -> SignaturePipeline | None:
    """Worker processes verifying the tx log's signatures for ``audit`` (none if 0)."""
    if not workers:
        return None

    def feed(offset: int, ts: int, raw: bytes, verified: bool) -> None:
        audit.feed_tx(offset, ts, raw, signature_verified=verified)

    return SignaturePipeline(feed, workers)


def _read_projection(config: AuditConfig) -> tuple[str, ProjectionSnapshot]:
    """The institution's database and its projection, read in one snapshot."""
    from readers import audit_projection as ap  # noqa: PLC0415 (only for this check)

    db_dsn = _institution_dsn(config)
    try:
        return db_dsn, ap.read_projection(db_dsn)
    except ap.ProjectionMissing as exc:
        raise AuditError(f"{config.institution}: {exc}") from exc
    except Exception as exc:  # psycopg errors: the database is unreachable
        raise AuditError(f"cannot read the projection: {exc}") from exc


def _institution_dsn(config: AuditConfig) -> str:
    from projections.projector import ConfigError, database_dsn, database_name  # noqa: PLC0415

    assert config.institution is not None
    if config.dsn is None:
        raise AuditError("--institution needs --dsn (the PostgreSQL server)")
    try:
        return database_dsn(config.dsn, config.dbname or database_name(config.institution))
    except ConfigError as exc:
        raise AuditError(str(exc)) from exc


def _check_stores(audit: ChainAudit, dsn: str, institution: str) -> None:
    """Batches of ``institution`` against its Layer-2 leaves (other institutions keep theirs
    in their own databases); its anchors and stored objects: :func:`_check_objects`."""
    from ledger.audit import check_l2_batch  # noqa: PLC0415
    from readers import audit_projection as ap  # noqa: PLC0415

    state = audit.machine.state
    leaves = ap.stored_leaves(dsn)
    if leaves is None:
        audit.findings.add(ap.skipped("l2", "Layer-2 leaves"))
    else:
        for key, record in state.items():
            if key.startswith("batch/") and record["institution_id"] == institution:
                for finding in check_l2_batch(record, leaves.get(record["batch_id"])):
                    audit.findings.add(finding)
    # stored objects: readers.audit_objects, called from run_audit (it reads the IAM topic)


def _check_objects(
    audit: ChainAudit,
    dsn: str,
    config: AuditConfig,
    accepted: tuple[tuple[int, str, dict[str, Any]], ...],
) -> None:
    """The stored objects' rows, grants and chunks (:mod:`readers.audit_objects`, D23), from
    the object events among the IAM topic's ``accepted`` events (D21), read once by the IAM
    check."""
    from readers import audit_objects  # noqa: PLC0415

    institution = config.institution
    assert institution is not None
    anchors = [
        r
        for k, r in audit.machine.state.items()
        if k.startswith("anchor/") and r["institution_id"] == institution
    ]
    try:
        findings = audit_objects.check(
            dsn,
            config.bootstrap,
            config.prefix,
            institution,
            anchors,
            replayed_height=audit.height,
            accepted=accepted,
        )
    except Exception as exc:  # the database or the IAM topic is unreachable
        raise AuditError(f"cannot audit the stored objects: {exc}") from exc
    for finding in findings:
        audit.findings.add(finding)


def _time_travel(audit: ChainAudit, height: int) -> dict[str, Any]:
    state = audit.machine.state
    out: dict[str, Any] = {"requested": height, "height": state.height,
                           "state_root": state.root.hex(),
                           "block_hash": audit.machine.last_hash.hex(),
                           "certified": height in audit.canonical_hashes,
                           "records_by_kind": state_summary(state)}  # fmt: skip
    if state.height < height:
        out["note"] = f"the log reaches only height {state.height}"
    members = audit.membership[-1] if audit.membership else None
    if members is not None:
        out["validators"] = {"since": members.height, "members": list(members.members),
                             "quorum": members.quorum}  # fmt: skip
    out["records"] = {key: {k: show(v, 200) for k, v in record.items()}
                      for key, record in state.items()}  # fmt: skip
    return out


# -- output -------------------------------------------------------------------------------
def render(report: AuditReport, *, verbose: bool = False) -> str:
    """The human report: the verdict and counts first, then each error and warning once,
    the notices grouped by kind with counts (``verbose``: each listed), then the details."""
    counts = report.severity_counts()
    verdict = "RESULT: CLEAN" if report.clean else f"RESULT: {counts[ERROR]} DISCREPANCIES"
    lines = [
        f"{verdict} ({counts[ERROR]} error(s), {counts[WARNING]} warning(s), "
        f"{counts[INFO]} notice(s); chain {report.chain_id!r} certified and verified up to "
        f"height {report.audited_height})"
    ]
    for severity, title in ((ERROR, "errors"), (WARNING, "warnings")):
        found = [f for f in report.findings if f.severity == severity]
        if found:
            lines.append(f"  {title}:")
            lines += _finding_lines(found)
    notices = [f for f in report.findings if f.severity == INFO]
    if notices and verbose:
        lines.append("  notices:")
        lines += _finding_lines(notices)
    elif notices:
        lines.append("  notices, by kind (--verbose lists them):")
        lines += _notice_counts(notices, report.dropped)
    listed = {f.kind for f in notices} if not verbose else set()
    for kind, extra in report.dropped.items():
        if kind not in listed:
            lines.append(f"    ... and {extra} more {kind} finding(s) (see the counts)")
    lines.append(
        f"Pantheon audit of chain {report.chain_id!r} (genesis "
        f"{report.genesis_hash.hex()[:16]}..., topics {report.prefix}*)"
    )
    ranges = ", ".join(f"{t.removeprefix(report.prefix)} {a}..{b}"
                       for t, (a, b) in report.log_ranges.items())  # fmt: skip
    lines.append(f"  logs read: {ranges}")
    codes = ", ".join(f"{c} {n:,}" for c, n in sorted(report.codes.items())) or "none"
    workers = (f", signatures verified by {report.signature_workers} worker processes"
               if report.signature_workers else "")  # fmt: skip
    lines.append(f"  replayed {report.replayed_height} block(s) from height "
                 f"{report.checkpoint_height}, {report.transactions:,} entries ({codes}) in "
                 f"{report.replay_seconds:.2f}s ({report.tx_rate:,.0f} tx/s{workers})")  # fmt: skip
    lines.append(f"  certified and verified up to height {report.audited_height}")
    for m in report.membership:
        lines.append(f"  validators from height {m['height']}: {', '.join(m['members'])} "
                     f"(quorum {m['quorum']})")  # fmt: skip
    if report.projection is not None:
        p = report.projection
        lines.append(f"  projection of {p['institution']} at height {p['projected_height']}:")
        lines.append(f"    {'table':<16}{'expected':>10}{'actual':>10}  digest")
        for t in p["tables"]:
            status = "ok" if t["equal"] else f"DIFFERS (expected {t['expected_digest'][:12]})"
            lines.append(f"    {t['table']:<16}{t['expected_rows']:>10,}{t['actual_rows']:>10,}"
                         f"  {t['actual_digest'][:12]} {status}")  # fmt: skip
        if "iam" in p and not p["iam"].get("skipped"):
            i = p["iam"]
            lines.append(
                f"  IAM of {p['institution']} to offset {i['position']}: {i['accepted']} "
                f"events applied, refused {i['refused'] or 'none'}, "
                f"{i['row_findings']} row finding(s)"
            )
    if report.at_height is not None:
        a = report.at_height
        lines.append(
            f"  state at height {a['height']}: block {a['block_hash'][:16]}..., "
            f"state root {a['state_root'][:16]}..., certified: {a['certified']}"
        )
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(a["records_by_kind"].items()))
        lines.append(f"    records: {kinds}")
        if "validators" in a:
            v = a["validators"]
            lines.append(f"    validators: {', '.join(v['members'])} (quorum {v['quorum']})")
    return "\n".join(lines)


def _where(f: Finding) -> str:
    pairs = (("topic", f.topic), ("offset", f.offset), ("height", f.height))
    return " ".join(f"{k}={v}" for k, v in pairs if v is not None)


def _finding_lines(findings: Sequence[Finding]) -> list[str]:
    """Findings, each distinct one once (a repeat is counted, not printed again)."""
    times: Counter[tuple[str, str, str, str]] = Counter()
    distinct: list[Finding] = []
    for f in findings:
        same = (f.check, f.kind, f.message, _where(f))
        if not times[same]:
            distinct.append(f)
        times[same] += 1
    lines = []
    for f in distinct:
        where = _where(f)
        n = times[(f.check, f.kind, f.message, where)]
        text = f"    {f.severity.upper():<7} [{f.check}] {f.kind}: {f.message}"
        lines.append(text + (f"  ({where})" if where else "") + (f"  (x{n})" if n > 1 else ""))
        for name, value in f.details.items():
            lines.append(f"             {name}: {json.dumps(show(value), default=str)}")
    return lines


def _notice_counts(notices: Sequence[Finding], dropped: dict[str, int]) -> list[str]:
    """One line per kind of notice: how many (those not listed included), and the first."""
    by_kind = Counter(f.kind for f in notices)
    for kind in by_kind:
        by_kind[kind] += dropped.get(kind, 0)
    first: dict[str, Finding] = {}
    for f in notices:
        first.setdefault(f.kind, f)
    return [
        f"    {n:>6}  [{first[kind].check}] {kind}: {first[kind].message}"
        + (" (and the like)" if n > 1 else "")
        for kind, n in by_kind.most_common()
    ]


def write_json(report: AuditReport, path: str) -> None:
    """The JSON report to ``path`` (``-``: stdout)."""
    text = json.dumps(report.as_dict(), indent=2, default=str)
    if path == "-":
        print(text)
    else:
        Path(path).write_text(text + "\n")


def publish(report: AuditReport, institution: str | None, outcome: str) -> None:
    """The run's figures into the Prometheus gauges."""
    projection = None
    if report.projection is not None and institution is not None:
        projection = (institution, int(report.projection["projected_height"]))
    audit_metrics.publish(errors_by_check=report.errors_by_check(),
                          by_severity=report.severity_counts(),
                          audited_height=report.audited_height, duration=report.duration,
                          rate=report.tx_rate, codes=report.codes,
                          log_ends={t: b for t, (_, b) in report.log_ranges.items()},
                          finished_at=time.time(), outcome=outcome,
                          projection=projection)  # fmt: skip


def build_parser(defaults: Defaults | None = None) -> argparse.ArgumentParser:
    """Arguments of ``pantheon audit`` (``defaults``: options the caller fills)."""
    p = Parser(
        prog="pantheon audit",
        description=__doc__.splitlines()[0] + " (exit 0 clean, 1 discrepancies, 2 could not run)",
    )
    p.add_argument("--genesis", required=True, type=Path, help="genesis.avro of the chain")
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    p.add_argument("--prefix", default="pantheon.", help="topic prefix")
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
    p.add_argument("--metrics-port", type=int, help="serve /metrics here")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="list every notice, and log progress"
    )
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
    config = AuditConfig(genesis=args.genesis, bootstrap=args.bootstrap, prefix=args.prefix,
                         institution=args.institution, dsn=args.dsn, dbname=args.dbname,
                         at_height=args.at_height, checkpoint=args.checkpoint,
                         timeout=args.timeout, workers=args.workers,
                         progress=sys.stderr.isatty() if args.progress is None
                         else args.progress)  # fmt: skip
    if args.metrics_port is not None:
        serve_metrics(args.metrics_port)
    stop = threading.Event()
    if args.every is not None:

        def on_signal(_signum: int, _frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    code = EXIT_ERROR
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
