"""The core stays pure: no module under ``ledger/`` imports I/O, clocks or randomness.

Every module is discovered with pkgutil (so modules added later are covered), imported, and its
source parsed with ``ast``: Import / ImportFrom nodes, ``__import__("x")`` and
``importlib.import_module("x")`` calls, and ``datetime.now()``-style clock reads are reported.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import ledger

FORBIDDEN_MODULES = frozenset(
    {
        # Kafka, Postgres and other clients
        "confluent_kafka",
        "faust",
        "aiokafka",
        "psycopg",
        "psycopg_pool",
        # I/O, processes, clocks and randomness of the standard library
        "asyncio",
        "socket",
        "selectors",
        "ssl",
        "http",
        "urllib",
        "time",
        "random",
        "secrets",
        "os",
        "subprocess",
        "multiprocessing",
        "threading",
        # our I/O packages
        "streams",
        "projections",
        "gateway",
        "infra",
        "runtime",
        "readers",
        "harness",
        "bench",
        "tests",
    }
)
CLOCK_READS = frozenset({"now", "utcnow", "today"})
CLOCK_OWNERS = frozenset({"datetime", "date"})
DYNAMIC_IMPORTS = frozenset({"__import__", "import_module"})


def _forbidden(module: str) -> bool:
    return module.split(".", maxsplit=1)[0] in FORBIDDEN_MODULES


def _name_of(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def absolute(node: ast.ImportFrom, module: str) -> str:
    """The absolute name of what ``node`` (in ``module``) imports from; relative ones resolved."""
    base = node.module or ""
    if node.level:
        package = module.split(".")[:-1]
        kept = package[: max(len(package) - node.level + 1, 0)]
        base = ".".join([*kept, base] if base else kept)
    return base


def impurities(source: str, module: str = "ledger.module") -> list[str]:
    """Describe every forbidden import or clock read in ``source`` (the text of ``module``)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if _forbidden(a.name)]
        elif isinstance(node, ast.ImportFrom):
            base = absolute(node, module)
            targets = [base] if base else []
            targets += [f"{base}.{a.name}".lstrip(".") for a in node.names]
            if any(_forbidden(t) for t in targets):
                names = ", ".join(a.name for a in node.names)
                found.append(f"from {'.' * node.level}{node.module or ''} import {names}")
        elif isinstance(node, ast.Call):
            callee = _name_of(node.func)
            arg = node.args[0] if node.args else None
            if (
                callee in DYNAMIC_IMPORTS
                and isinstance(arg, ast.Constant)
                and isinstance(arg.value, str)
                and _forbidden(arg.value)
            ):
                found.append(f"{callee}({arg.value!r})")
            if (
                isinstance(node.func, ast.Attribute)
                and node.func.attr in CLOCK_READS
                and _name_of(node.func.value) in CLOCK_OWNERS
            ):
                found.append(f"clock read {_name_of(node.func.value)}.{node.func.attr}()")
    return found


def _core_modules() -> list[str]:
    names = [ledger.__name__]
    names += [m.name for m in pkgutil.walk_packages(ledger.__path__, prefix="ledger.")]
    return sorted(names)


CORE_MODULES = _core_modules()


def test_core_modules_are_discovered() -> None:
    assert "ledger.merkle" in CORE_MODULES
    assert "ledger.merkle_reference" in CORE_MODULES


@pytest.mark.parametrize("name", CORE_MODULES)
def test_core_module_is_pure(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    source = Path(module.__file__).read_text(encoding="utf-8")
    if Path(module.__file__).name == "__init__.py":
        name += ".__init__"  # relative imports of a package resolve inside it
    offences = impurities(source, name)
    assert not offences, f"{name} is not pure: {offences}"


@pytest.mark.parametrize(
    "source",
    [
        "import socket",
        "import os.path",
        "import json, time",
        "from time import monotonic",
        "from os import path as p",
        "from confluent_kafka import Producer",
        "from psycopg_pool import ConnectionPool",
        "import asyncio\n",
        "def f():\n    import random\n    return random.random()",
        "from streams.producer import send",
        "from infra import cli",
        "from ... import gateway",
        "from ...streams import topics",
        "import importlib\nimportlib.import_module('subprocess')",
        "__import__('secrets')",
        "from datetime import datetime\nnow = datetime.now()",
        "import datetime\nx = datetime.datetime.utcnow()",
        "import datetime\nx = datetime.date.today()",
    ],
)
def test_checker_flags_impure_source(source: str) -> None:
    assert impurities(source, "ledger.sub.module"), source


@pytest.mark.parametrize(
    "source",
    [
        "import hashlib",
        "from dataclasses import dataclass",
        "from typing import Sequence",
        "from datetime import datetime, timedelta\nx: datetime",
        "from . import merkle",
        "from .. import gateway  # that is ledger.gateway",
        "from ledger.merkle import root",
        "from schemas import codec",
        "import timeit_not_time",
        "osmosis = 1",
        "x.now_or_never()",
    ],
)
def test_checker_accepts_pure_source(source: str) -> None:
    assert impurities(source, "ledger.sub.module") == []
