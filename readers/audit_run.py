"""One run of ``pantheon audit`` (module docstring of :mod:`readers.audit`): read the
projection, replay the logs into :class:`ledger.audit.ChainAudit`, check the institution's
tables, and fill an :class:`~readers.audit_report.AuditReport`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ledger.audit import ChainAudit
from ledger.audit_findings import show
from ledger.audit_stores import state_summary
from ledger.errors import LedgerError
from ledger.genesis import Genesis
from ledger.snapshot import SnapshotMeta, decode_snapshot
from ledger.state import WorldState
from readers.audit_config import AuditConfig, AuditError
from readers.audit_logs import TOPICS, replay_logs
from readers.audit_report import AuditReport
from streams.signature_pipeline import SignaturePipeline

if TYPE_CHECKING:
    from readers.audit_projection import ExpectedRows, ProjectionSnapshot


def run_audit(config: AuditConfig) -> AuditReport:
    """One audit run; raises :class:`AuditError` if it cannot run."""
    started, clock = time.time(), time.monotonic()
    genesis = _load_genesis(config)
    checkpoint = _load_checkpoint(config, genesis)
    topics = {t: f"{config.prefix}{t}" for t in TOPICS}
    report = AuditReport(
        chain_id=genesis.params.chain_id,
        genesis_hash=genesis.hash(),
        prefix=config.prefix,
        started_at=started,
    )

    audit = ChainAudit(genesis, topics=topics, checkpoint=checkpoint, stop_height=config.at_height)
    report.checkpoint_height = audit.start_height
    report.signature_workers = config.signature_workers
    pipeline = _signature_pipeline(audit, report.signature_workers)  # they start meanwhile

    # 1. the projection first (its height bounds what the logs must contain)
    snapshot = db_dsn = None
    if config.institution is not None:
        try:
            db_dsn, snapshot = _read_projection(config)
        except BaseException:
            if pipeline is not None:
                pipeline.close()
            raise

    iam = _start_iam(config, pipeline)  # the IAM projection too, before the logs (D21)

    # 2. the logs, read to the end offsets taken now
    expected, block_messages = replay_logs(
        config, audit, genesis, topics, report, pipeline, snapshot, iam
    )
    audit.finish()

    # 3. the projection, Layer 2 and stored objects
    _check_institution(config, audit, report, iam, snapshot, expected, db_dsn, block_messages)
    _summarize(report, audit, config)
    report.duration = time.monotonic() - clock
    return report


def _load_genesis(config: AuditConfig) -> Genesis:
    try:
        return Genesis.decode(config.genesis.read_bytes())
    except (OSError, LedgerError) as exc:
        raise AuditError(f"cannot read genesis {config.genesis}: {exc}") from exc


def _load_checkpoint(
    config: AuditConfig, genesis: Genesis
) -> tuple[WorldState, SnapshotMeta] | None:
    """The trusted validator snapshot of ``--checkpoint`` (None: replay from offset 0)."""
    if config.checkpoint is None:
        return None
    if config.institution is not None:
        raise AuditError("the projection check needs a replay from offset 0 (no checkpoint)")
    try:
        checkpoint = decode_snapshot(config.checkpoint.read_bytes())
    except (OSError, LedgerError) as exc:
        raise AuditError(f"cannot read checkpoint {config.checkpoint}: {exc}") from exc
    if checkpoint[1].chain_id != genesis.params.chain_id:
        raise AuditError("the checkpoint is of another chain")
    return checkpoint


def _check_institution(  # noqa: PLR0917 (the run's parts, in the order run_audit has them)
    config: AuditConfig,
    audit: ChainAudit,
    report: AuditReport,
    iam: Any,
    snapshot: ProjectionSnapshot | None,
    expected: ExpectedRows | None,
    db_dsn: str | None,
    block_messages: dict[int, bytes],
) -> None:
    """With ``--institution``: its projection against the replay, its Layer-2 leaves, its
    IAM tables and its stored objects."""
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


def _summarize(report: AuditReport, audit: ChainAudit, config: AuditConfig) -> None:
    """The replay's figures and findings into ``report``."""
    report.replayed_height = audit.height
    report.audited_height = audit.audited_height
    report.codes = dict(audit.codes)
    report.transactions = sum(audit.codes.values())
    report.counts = dict(audit.counts)
    report.membership = [
        {
            "height": m.height,
            "members": list(m.members),
            "quorum": m.quorum,
            "validator_set_hash": m.validator_set_hash.hex(),
        }
        for m in audit.membership
    ]
    report.findings = list(audit.findings.items)
    report.dropped = audit.findings.dropped()
    if config.at_height is not None:
        report.at_height = _time_travel(audit, config.at_height)


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
    from projections.projector import database_dsn, database_name  # noqa: PLC0415
    from runtime.cli_args import ConfigError  # noqa: PLC0415

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
    from ledger.audit_stores import check_l2_batch  # noqa: PLC0415
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
    out: dict[str, Any] = {
        "requested": height,
        "height": state.height,
        "state_root": state.root.hex(),
        "block_hash": audit.machine.last_hash.hex(),
        "certified": height in audit.canonical_hashes,
        "records_by_kind": state_summary(state),
    }
    if state.height < height:
        out["note"] = f"the log reaches only height {state.height}"
    members = audit.membership[-1] if audit.membership else None
    if members is not None:
        out["validators"] = {
            "since": members.height,
            "members": list(members.members),
            "quorum": members.quorum,
        }
    out["records"] = {
        key: {k: show(v, 200) for k, v in record.items()} for key, record in state.items()
    }
    return out
