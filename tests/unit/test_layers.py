"""Packages import one way: each only the packages below it (D37).

Every module of the repository's packages is parsed with ``ast`` (imports inside functions and
``TYPE_CHECKING`` blocks included, relative imports resolved) and each import of another of
our packages is checked against ``ALLOWED``. An import the table does not allow fails, unless
``EXCEPTIONS`` names it with its reason; an exception that no longer occurs fails too.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_core_purity import absolute

REPO = Path(__file__).resolve().parents[2]

# package: the packages it may import (everything below it), one line per package
ALLOWED: dict[str, frozenset[str]] = {
    "schemas": frozenset(),
    "ledger": frozenset({"schemas"}),
    "runtime": frozenset({"schemas", "ledger"}),
    "streams": frozenset({"schemas", "ledger", "runtime"}),
    "projections": frozenset({"schemas", "ledger", "runtime"}),
    "readers": frozenset({"schemas", "ledger", "runtime", "streams", "projections"}),
    "gateway": frozenset({"schemas", "ledger", "runtime", "streams", "projections", "readers"}),
    "infra": frozenset(
        {"schemas", "ledger", "runtime", "streams", "projections", "readers", "gateway"}
    ),
    "harness": frozenset(
        {"schemas", "ledger", "runtime", "streams", "projections", "readers", "gateway", "infra"}
    ),
    "bench": frozenset(
        {"schemas", "ledger", "runtime", "streams", "projections", "readers", "gateway", "infra"}
        | {"harness"}
    ),
    "tests": frozenset(
        {"schemas", "ledger", "runtime", "streams", "projections", "readers", "gateway", "infra"}
        | {"harness", "bench"}
    ),
}

# (importing module, imported module): why the edge is allowed anyway. None today.
EXCEPTIONS: dict[tuple[str, str], str] = {}

INSTALLED = ("schemas", "ledger", "runtime", "streams", "projections", "readers", "gateway")


def imports(source: str, module: str) -> Iterator[str]:
    """Every module ``source`` (the text of ``module``) imports, as absolute dotted names."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = absolute(node, module)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")


def offences(source: str, module: str) -> list[str]:
    """The imports of ``module`` that ``ALLOWED`` and ``EXCEPTIONS`` do not permit."""
    own = module.split(".", maxsplit=1)[0]
    found = []
    for target in dict.fromkeys(imports(source, module)):
        top = target.split(".", maxsplit=1)[0]
        if top == own or top not in ALLOWED or top in ALLOWED[own]:
            continue
        if (module, target) not in EXCEPTIONS:
            found.append(f"{module} imports {target}")
    return found


def _modules() -> dict[str, Path]:
    found = {}
    for package in ALLOWED:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = (*parts[:-1], "__init__")  # relative imports resolve inside it
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def test_every_package_has_a_row() -> None:
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")}
    assert packages == set(ALLOWED), "place each package in ALLOWED"
    assert "readers.audit" in MODULES
    assert "runtime.topics" in MODULES


def test_the_table_is_a_strict_order() -> None:
    for package, lower in ALLOWED.items():
        assert package not in lower
        for below in lower:
            assert ALLOWED[below] < lower, f"{package} may import {below} but not all it may"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_imports_only_lower_packages(module: str) -> None:
    source = MODULES[module].read_text(encoding="utf-8")
    assert offences(source, module) == []


def test_every_exception_still_occurs() -> None:
    for (module, target), reason in EXCEPTIONS.items():
        assert reason, f"{module} -> {target} needs a reason"
        source = MODULES[module].read_text(encoding="utf-8")
        assert target in set(imports(source, module)), f"stale exception {module} -> {target}"


@pytest.mark.parametrize(
    ("source", "module"),
    [
        ("from projections import read", "streams.validator"),
        ("from streams.sdk import LedgerClient", "projections.iam"),
        ("def f():\n    from gateway import app\n", "readers.audit"),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import infra.cli", "gateway.x"),
        ("from tests.unit import chain_helpers", "bench.l2"),
        ("from ...infra import cli", "streams.a.b"),
        ("import runtime.logs", "ledger.merkle"),
        ("from harness import consortium", "infra.cli"),
    ],
)
def test_checker_flags_upward_imports(source: str, module: str) -> None:
    assert offences(source, module), source


@pytest.mark.parametrize(
    ("source", "module"),
    [
        ("from projections import read", "readers.proofs"),
        ("from runtime import logs", "streams.validator"),
        ("from . import topics", "runtime.kafka_config"),
        ("from .. import rows", "projections.sub.x"),
        ("import json\nfrom harness.consortium import new_key", "tests.unit.test_x"),
        ("from schemas.codec import encode", "ledger.tx"),
    ],
)
def test_checker_accepts_downward_imports(source: str, module: str) -> None:
    assert offences(source, module) == []


def test_every_installed_package_ships() -> None:
    """pyproject installs, mypy checks and the image copies every package it needs."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    checked = project["tool"]["mypy"]["packages"]
    compose = REPO / "infra" / "compose"
    docker = (compose / "Dockerfile").read_text(encoding="utf-8")
    ignore = (compose / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    for package in INSTALLED:
        assert f"{package}*" in include
        assert re.search(rf"^COPY {package} {package}$", docker, re.M)
        assert f"!{package}/" in ignore
    assert set(ALLOWED) <= set(checked)
