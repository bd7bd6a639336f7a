"""The atheris long-run driver (``tests/faults/atheris_fuzz.py``) still runs: a short run of
every target, so it cannot rot between long runs by hand."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ("decoder", "tx", "proof", "jwt")
RUNS = 2000
LINE = re.compile(
    r"^atheris_fuzz (\w+): inputs=(\d+) accepted=(\d+) refused=(\d+) findings=(\d+)", re.M
)


def test_every_target_runs_without_findings(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "tests.faults.atheris_fuzz", "--target", "all"]
    cmd += ["--runs", str(RUNS), "--seed", "1", "--artifacts", str(tmp_path / "artifacts")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=150, check=False)
    output = f"{done.stdout}\n--- stderr (tail) ---\n{done.stderr[-4000:]}"
    assert done.returncode == 0, output
    figures = {m[0]: tuple(int(v) for v in m[1:]) for m in LINE.findall(done.stdout)}
    assert sorted(figures) == sorted(TARGETS), output
    for target, (inputs, accepted, refused, findings) in figures.items():
        # every input executed was answered: accepted (a genuine seed) or refused as documented
        assert inputs >= RUNS and accepted + refused == inputs, (target, output)
        assert accepted >= 1 and refused >= 1 and findings == 0, (target, output)
    total = re.search(r"^atheris_fuzz total: inputs=(\d+) findings=0 ", done.stdout, re.M)
    assert total is not None and int(total[1]) == sum(f[0] for f in figures.values()), output
