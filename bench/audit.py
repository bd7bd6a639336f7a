"""Audit throughput beside the transaction-verification ceiling, against a real broker.

Starts a private single-node Kafka. ``--txs`` AnchorData transactions are finalized by
``harness.projections_support.SimChain`` (blocks and receipts published
``--copies`` times, as that many validators would; the certificates' votes are put on the
votes topic), then:

1. verify ceiling: ``parse_tx`` (decode + Ed25519 verify) of every envelope of the same run,
   in this process: the work an audit cannot avoid per transaction (measured before and
   after each audit run; the best figure is the ceiling);
2. ``pantheon audit`` (``readers.audit.run_audit``, no projection): the replay rate (reading
   blocks, votes and tx, cutting, executing, checking every copy) and the end-to-end rate
   (receipts included), with the default signature workers (one process per core verifying
   signatures ahead of the replay) and in process (``--workers 0``) for comparison.

The machine's load average is printed beside the figures: on a shared machine they are only
comparable at similar load.

    python -m bench.audit [--txs 40000] [--block-txs 500] [--copies 4] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from harness.consortium import read_partition
from harness.projections_support import SimChain, anchor
from harness.stack_fixtures import private_settings
from infra.kafka_server import KafkaCluster
from ledger.blocks import decode_finalized
from ledger.finality import QuorumCertificate
from ledger.tx import parse_tx
from readers.audit import AuditConfig, AuditReport, run_audit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=40000)
    parser.add_argument("--block-txs", type=int, default=500)
    parser.add_argument("--copies", type=int, default=4, help="validators publishing")
    parser.add_argument("--runs", type=int, default=3, help="audit runs (best is shown)")
    parser.add_argument("--workers", type=int, help="signature workers (default: one per core)")
    args = parser.parse_args()
    settings = private_settings()
    kafka = KafkaCluster(settings)
    work = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    try:
        kafka.start()
        bootstrap = settings.bootstrap_servers
        sim = SimChain(bootstrap, "bench.", work, max_block_txs=args.block_txs, copies=args.copies)
        signer = sim.gov("inst-1")
        envelopes: list[bytes] = []
        for start in range(0, args.txs, 2000):
            batch = [
                anchor(sim, signer, f"a-{i}") for i in range(start, min(args.txs, start + 2000))
            ]
            envelopes += batch
            sim.send(batch)
        height = sim.finalize()
        seen: set[int] = set()
        votes = []
        for msg in read_partition(bootstrap, sim.topic("blocks")):
            header, cert, _ = decode_finalized(msg.value)
            if header.height not in seen:
                seen.add(header.height)
                votes += [v.encode() for v in QuorumCertificate.from_record(cert).votes]
        sim.send(votes, topic="votes")
        sim.close()
        print(
            f"chain: {len(envelopes):,} transactions in {height} blocks, {args.copies} copies "
            f"of each block and receipt, {len(votes):,} votes"
        )

        def verify_rate() -> float:
            began = time.perf_counter()
            for raw in envelopes:
                parse_tx(raw)
            return len(envelopes) / (time.perf_counter() - began)

        configs = {
            "parallel": AuditConfig(
                genesis=sim.genesis_path, bootstrap=bootstrap, prefix="bench.", workers=args.workers
            ),
            "in process": AuditConfig(
                genesis=sim.genesis_path, bootstrap=bootstrap, prefix="bench.", workers=0
            ),
        }
        load = os.getloadavg()[0]
        verify = verify_rate()
        best: dict[str, AuditReport] = {}
        for _ in range(args.runs):  # interleaved, best of each: the machine may be shared
            for name, config in configs.items():
                report = run_audit(config)
                errors = [f.as_dict() for f in report.findings if f.severity == "error"]
                assert report.clean, errors
                if name not in best or report.tx_rate > best[name].tx_rate:
                    best[name] = report
                verify = max(verify, verify_rate())
        print(
            f"load average (1 min): {load:.2f} before, {os.getloadavg()[0]:.2f} after, "
            f"{os.cpu_count()} cores"
        )
        show(verify, list(best.values()))
    finally:
        kafka.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(settings.state_dir, ignore_errors=True)


def show(verify: float, reports: list[AuditReport]) -> None:
    """The figures, each audit rate as a share of the verify ceiling."""
    print(f"{'verify ceiling (decode + Ed25519 verify)':<48} {verify:>10,.0f} tx/s")
    for report in reports:
        how = (
            f"{report.signature_workers} signature workers"
            if report.signature_workers
            else "in process, --workers 0"
        )
        end_to_end = report.transactions / report.duration
        waited = (
            f"; waited {report.signature_wait:.2f} s for workers"
            if report.signature_workers
            else ""
        )
        print(
            f"{f'audit replay ({how})':<48} {report.tx_rate:>10,.0f} tx/s   "
            f"({100 * report.tx_rate / verify:.0f}% of the verify ceiling{waited})"
        )
        print(
            f"{'  end to end (receipts included)':<48} {end_to_end:>10,.0f} tx/s   "
            f"({100 * end_to_end / verify:.0f}%; {report.duration:.2f} s, audited height "
            f"{report.audited_height})"
        )


if __name__ == "__main__":
    main()
