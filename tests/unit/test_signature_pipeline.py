"""The signature pipeline (streams/signature_pipeline.py) with real worker processes: messages
reach the audit in log order with the right verdicts, the findings are those of the in-process
audit (tampering included), and lost workers only mean the core verifies by itself."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from ledger.audit import ChainAudit
from ledger.cutter import TimeToCut
from ledger.tx import signature_verifies
from readers.audit import AuditConfig, build_parser
from streams.signature_pipeline import SignaturePipeline, verify_chunk
from tests.unit.chain_helpers import CHAIN
from tests.unit.test_audit import Logs


def tampered_logs() -> Logs:
    """Three blocks; then a copy of a valid envelope with a broken signature, and garbage,
    appended to the tx log and cut as block 4 (which no quorum certified)."""
    logs = Logs()
    for _ in range(3):
        logs.block(count=40)
    _, ts, raw = logs.tx[1]
    bad = raw[:-1] + bytes([raw[-1] ^ 1])
    end = len(logs.tx)
    marker = TimeToCut(chain_id=CHAIN, height=4, producer=b"x").encode()
    logs.tx += [(end, ts + 100, bad), (end + 1, ts + 101, b"garbage"), (end + 2, ts + 102, marker)]
    return logs


def audited(logs: Logs, workers: int, **kw: int) -> ChainAudit:
    """``logs`` audited, the tx log through a pipeline of ``workers`` (``kw``) if any."""
    if not workers:
        return logs.audit()

    def through_workers(a: ChainAudit) -> None:
        def feed(offset: int, ts: int, raw: bytes, verified: bool) -> None:
            a.feed_tx(offset, ts, raw, signature_verified=verified)

        with SignaturePipeline(feed, workers, **kw) as pipeline:
            pipeline.wait_ready()
            for offset, ts, raw in logs.tx:
                pipeline.add(offset, ts, raw)
            pipeline.flush()

    return logs.audit(feed_tx=through_workers)


def test_verify_chunk_is_a_bitmap_of_signature_verifies() -> None:
    raws = [raw for _, _, raw in tampered_logs().tx]
    bits = verify_chunk(raws)
    assert len(bits) == (len(raws) + 7) // 8
    assert [bool(bits[i // 8] >> (i % 8) & 1) for i in range(len(raws))] == [
        signature_verifies(raw) for raw in raws
    ]
    assert verify_chunk([]) == b""


def test_messages_arrive_in_order_with_their_verdicts() -> None:
    logs = tampered_logs()
    seen: list[tuple[int, int, bytes, bool]] = []
    with SignaturePipeline(lambda *m: seen.append(m), 2, chunk=16, depth=2) as pipeline:
        for message in logs.tx:
            pipeline.add(*message)
        pipeline.flush()
        assert pipeline.vouched == 120 and pipeline.unverified == len(logs.tx) - 120
    assert [m[:3] for m in seen] == logs.tx
    assert [m[3] for m in seen] == [signature_verifies(raw) for _, _, raw in logs.tx]


def test_parallel_audit_reports_what_the_in_process_audit_reports() -> None:
    logs = tampered_logs()
    alone, parallel = audited(logs, 0), audited(logs, 2, chunk=32)
    assert [f.as_dict() for f in parallel.findings.items] == [
        f.as_dict() for f in alone.findings.items
    ]
    assert parallel.codes == alone.codes
    assert parallel.codes["BAD_SIGNATURE"] == 1 and parallel.codes["MALFORMED"] == 1
    assert parallel.machine.last_hash == alone.machine.last_hash
    assert parallel.audited_height == alone.audited_height == 3
    assert parallel.machine.height == 4  # the tampered block is executed, not certified


def test_lost_workers_leave_the_verifying_to_the_core() -> None:
    logs = tampered_logs()
    seen: list[bool] = []
    with SignaturePipeline(lambda *m: seen.append(m[3]), 2, chunk=8) as pipeline:
        pids = {f.result() for f in pipeline._warmup}
        for pid in pids:  # the workers this test started
            os.kill(pid, signal.SIGKILL)
        for message in logs.tx:
            pipeline.add(*message)
        pipeline.flush()
    assert len(seen) == len(logs.tx) and not any(seen)


def test_needs_a_worker() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        SignaturePipeline(lambda *m: None, 0)


def test_workers_option() -> None:
    args = build_parser().parse_args(["--genesis", "g", "--bootstrap", "b"])
    assert args.workers is None
    assert (
        build_parser().parse_args(["--genesis", "g", "--bootstrap", "b", "--workers", "3"]).workers
        == 3
    )

    def config(workers: int | None) -> AuditConfig:
        return AuditConfig(genesis=Path("g"), bootstrap="b", workers=workers)

    cores = os.cpu_count() or 1
    assert config(None).signature_workers == (cores if cores > 1 else 0)
    assert config(0).signature_workers == config(1).signature_workers == 0
    assert config(3).signature_workers == 3
