"""The README's tour, run as written against a private local consortium, in a new shell.

The commands and Python snippets are extracted from README.md itself, so the README cannot
rot: only the default ports of the Python snippets, the state directory and the virtualenv
path are substituted for the private stack's. Each runs in a fresh environment (as `env -i`
gives, D36): Debian's default PATH without the virtualenv, HOME, no exported variable but
PANTHEON_STATE_DIR (which stands for the README's `.pantheon/`), and PYTHONPATH naming this
checkout (the development machines' shared virtualenv may be installed from another one).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.stack_fixtures import private_settings, removed_afterwards, stack_variables
from infra.cli import main
from infra.invocation import DEFAULT_PATH
from infra.settings import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    """Fenced code blocks of ``language``, dedented."""
    found = re.findall(rf"^( *)```{language}\n(.*?)^\1```", README, re.M | re.S)
    return ["\n".join(line[len(indent) :] for line in body.splitlines()) for indent, body in found]


def _inline(start: str) -> str:
    """The inline-code command of the README beginning with ``start`` (may wrap lines)."""
    match = re.search(rf"`({re.escape(start)}[^`]*)`", README)
    assert match, f"README has no `{start}...` command"
    return " ".join(match.group(1).split())


def _localize(text: str, settings: Settings) -> str:
    return (
        text.replace("127.0.0.1:19092", settings.bootstrap_servers)
        .replace("port=15432", f"port={settings.pg_port}")
        .replace(".pantheon/", f"{settings.state_dir}/")
        .replace(".venv/bin/", f"{Path(sys.executable).parent}/")
    )


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, f"{argv}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_readme_tour_works_as_written(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = private_settings()
    for key, value in stack_variables(settings).items():
        monkeypatch.setenv(key, value)  # for `up` alone: it records them in the state dir
    env = {
        "PATH": DEFAULT_PATH,
        "HOME": os.environ["HOME"],
        "PYTHONPATH": str(ROOT),
        "PANTHEON_STATE_DIR": str(settings.state_dir),
    }
    with removed_afterwards(settings.state_dir):
        try:
            assert main(["up"]) == 0

            # 1. the first administrator, with the command of the README
            admin = _localize(_inline("PANTHEON_ADMIN_PASSWORD="), settings)
            out = _run(["bash", "-c", admin], env, tmp_path)
            assert "administrator admin of alpha created" in out

            # 3. a signed transaction from Python (the snippet of "The local consortium")
            send, device = _blocks("python")[:2]
            out = _run([sys.executable, "-c", _localize(send, settings)], env, tmp_path)
            height, code = out.split()[-2:]
            assert code == "OK" and int(height) >= 1

            # 4. device readings, then proof and offline verification
            out = _run([sys.executable, "-c", _localize(device, settings)], env, tmp_path)
            key_id = out.split()[-1]
            assert re.fullmatch(r"[0-9a-f]{64}", key_id)
            (proof_and_verify,) = [b for b in _blocks("bash") if "pantheon verify" in b]
            script = _localize(proof_and_verify, settings).replace("<the printed key id>", key_id)
            for attempt in range(60):  # until the batcher's batch is final and projected
                done = subprocess.run(
                    ["bash", "-c", script],
                    env=env,
                    cwd=tmp_path,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                if done.returncode == 0:
                    break
                assert attempt < 59, done.stdout + done.stderr
                time.sleep(1)
            assert '"valid": true' in done.stdout
            assert list(tmp_path.iterdir()) == []  # nothing left in the working directory

            # 5. the audit comes back clean, its verdict first
            audit = _localize(_inline(".venv/bin/pantheon audit"), settings)
            out = _run(["bash", "-c", audit], env, tmp_path)
            assert out.startswith("RESULT: CLEAN"), out

            # 6. status: everything healthy, the auditors included
            status = _localize(_inline(".venv/bin/pantheon status"), settings)
            out = _run(["bash", "-c", status], env, tmp_path)
            assert re.search(r"^  alpha +running", out.split("auditor", 1)[1], re.M), out

            # 7. stop alpha's projector, rebuild its projections, start it again
            (rebuild,) = [b for b in _blocks("bash") if "projections rebuild" in b]
            out = _run(["bash", "-ec", _localize(rebuild, settings)], env, tmp_path)
            assert "projector of alpha stopped" in out and "rebuilt pantheon_alpha" in out
            assert "projector of alpha running" in out
        finally:
            assert main(["down"]) == 0
