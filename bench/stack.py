"""What `pantheon up` costs: the first and second start, and the continuous auditors (D36).

Starts a private local consortium with ``pantheon up`` (free ports, a temporary state
directory, auditors every ``--audit-every`` seconds), waits ``--wait`` seconds, then prints:
the seconds of the first ``up`` and its steps, each auditor's last run (wall seconds, from
Prometheus' ``pantheon_audit_run_duration_seconds``), each auditor's CPU seconds since it
started (from ``/proc``), and the seconds of a second ``up`` (nothing to start). Stops the
stack at the end. The load average is printed beside: on a shared machine the figures are
only comparable at similar load.

    python -m bench.stack [--audit-every 10] [--wait 25]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import time
import urllib.parse
import urllib.request
from pathlib import Path

from harness.stack_fixtures import private_settings, removed_afterwards, stack_variables
from infra import procs
from infra.cli import main as pantheon


def _quiet(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = pantheon(list(argv))
    if code not in (0, 3):
        raise SystemExit(f"pantheon {' '.join(argv)} failed ({code}):\n{out.getvalue()}")
    return out.getvalue()


def run(audit_every: float, wait: float) -> None:
    """Start, measure, print, stop."""
    settings = private_settings()
    os.environ.update(stack_variables(settings), PANTHEON_AUDIT_EVERY=str(audit_every))
    with removed_afterwards(settings.state_dir):
        try:
            began = time.monotonic()
            first = _quiet("up").splitlines()[0]
            print(f"first up: {time.monotonic() - began:.1f}s  ({first})")
            time.sleep(wait)
            query = urllib.parse.urlencode({"query": "pantheon_audit_run_duration_seconds"})
            url = f"http://127.0.0.1:{settings.prom_port}/api/v1/query?{query}"
            with urllib.request.urlopen(url, timeout=10) as resp:
                rows = json.load(resp)["data"]["result"]
            tick = os.sysconf("SC_CLK_TCK")
            for row in sorted(rows, key=lambda r: r["metric"].get("institution", "")):
                inst = row["metric"].get("institution", "?")
                pid_file = settings.state_dir / "consortium" / "auditors" / inst / "pid"
                pid = procs.read_pid(pid_file)
                cpu = "gone"
                if pid is not None:
                    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    cpu = f"{(int(stat[11]) + int(stat[12])) / tick:.1f}s"
                print(
                    f"auditor {inst:<6} last run {float(row['value'][1]):.2f}s wall, "
                    f"CPU since start {cpu}"
                )
            began = time.monotonic()
            _quiet("up")
            print(f"second up: {time.monotonic() - began:.1f}s")
            print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        finally:
            _quiet("down")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stack", description=__doc__)
    parser.add_argument("--audit-every", type=float, default=10.0, help="auditor period, s")
    parser.add_argument("--wait", type=float, default=25.0, help="seconds before measuring")
    args = parser.parse_args()
    run(args.audit_every, args.wait)


if __name__ == "__main__":
    main()
