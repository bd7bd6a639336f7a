"""Production modules stay small enough to read whole (issue 20, D45).

Every ``.py`` file of the production packages (the installed ones and ``infra``; not tests,
``harness`` or ``bench``) has at most :data:`MAX_LINES` lines, unless :data:`ALLOWED_LARGER`
names it with the reason; an allowance that is no longer needed fails too, so the list only
shrinks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_layers import INSTALLED, REPO

MAX_LINES = 450
PRODUCTION = (*INSTALLED, "infra")

# module path: why it may be longer, for now
ALLOWED_LARGER: dict[str, str] = {}


def line_count(path: Path) -> int:
    """Lines as ``wc -l`` counts them."""
    return path.read_bytes().count(b"\n")


def production_modules() -> list[Path]:
    return sorted(p for package in PRODUCTION for p in (REPO / package).rglob("*.py"))


def test_the_production_packages_are_found() -> None:
    found = {p.relative_to(REPO).parts[0] for p in production_modules()}
    assert found == set(PRODUCTION)


@pytest.mark.parametrize("path", production_modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_a_production_module_has_at_most_450_lines(path: Path) -> None:
    name = path.relative_to(REPO).as_posix()
    if name in ALLOWED_LARGER:
        return
    assert line_count(path) <= MAX_LINES, f"{name}: split it by concern, or allow it with a reason"


@pytest.mark.parametrize("name", sorted(ALLOWED_LARGER))
def test_every_allowance_is_still_needed_and_has_a_reason(name: str) -> None:
    assert ALLOWED_LARGER[name].strip()
    assert line_count(REPO / name) > MAX_LINES, f"{name} fits now: remove its allowance"


def test_the_count_is_wc_l(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_bytes(b"a = 1\n\nb = 2\n")
    assert line_count(tmp_path / "m.py") == 3
