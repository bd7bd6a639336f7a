"""``pantheon up --operators N``: keys in the genesis, validator directories, limits (D38)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.cli import build_parser
from infra.consortium import Consortium
from infra.errors import StackError
from infra.settings import Settings


def consortium(tmp_path: Path, operators: int | None) -> Consortium:
    c = Consortium(Settings.from_env().with_changes(state_dir=tmp_path))
    c.operators = operators
    return c


def test_a_new_genesis_gets_n_operator_keys_per_institution(tmp_path: Path) -> None:
    c = consortium(tmp_path, 2)
    institutions = c.ensure_genesis()
    assert len(institutions) >= 1
    for inst in institutions:
        doc = json.loads((c.home / "keys" / f"{inst}.json").read_text())
        seeds = {op["seed"] for op in doc["operators"]}
        assert len(seeds) == 2 and c.operator_keys(inst) == 2
        assert c._operators_to_run(inst) == 2


def test_more_operators_than_the_genesis_holds_is_a_clear_error(tmp_path: Path) -> None:
    consortium(tmp_path, None).ensure_genesis()  # one operator key each
    again = consortium(tmp_path, None)
    inst = again.institutions()[0]
    assert again._operators_to_run(inst) == 1
    again.operators = 2
    with pytest.raises(StackError, match="--operators 1 or fewer"):
        again._operators_to_run(inst)


def test_status_lists_every_started_operator(tmp_path: Path) -> None:
    c = consortium(tmp_path, 2)
    first = c.ensure_genesis()[0]
    assert (first, 1) not in c._nodes()  # never started
    (c.home / "validators" / f"{first}-1").mkdir(parents=True)
    assert (first, 1) in c._nodes()
    names = [v.name for v in c.status()]
    assert f"{first}-0" in names and f"{first}-1" in names


def test_the_operators_option_takes_a_positive_count() -> None:
    assert build_parser().parse_args(["up", "--operators", "2"]).operators == 2
    assert build_parser().parse_args(["up"]).operators is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["up", "--operators", "0"])
