"""Finished leaves of the SQL-JSON path kept by their raw value (D68), and newest-rows
statements with their LIMIT as a literal (D68)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.sql_finish import MEMO_KEY_CHARS, then_serialize
from projections.read.model import limited


class Counting:
    """A finishing function that counts its calls and answers from its input."""

    def __init__(self, result: Any = None) -> None:
        self.calls: list[Any] = []
        self.result = result

    def __call__(self, raw: Any) -> Any:
        self.calls.append(raw)
        return {"raw": raw} if self.result is None else self.result


def test_a_memo_leaf_is_finished_once_per_raw_text() -> None:
    finish = Counting()
    finished = then_serialize(finish, repr, memo=True)
    assert finished("aa") == finished("aa") == repr({"raw": "aa"})
    assert finished("ab") == repr({"raw": "ab"})  # other bytes: their own value
    assert finish.calls == ["aa", "ab"]
    assert finished(None) is None


def test_what_is_not_kept() -> None:
    finish = Counting()
    plain = then_serialize(finish, repr)
    plain("aa")
    plain("aa")
    assert finish.calls == ["aa", "aa"]  # without memo, every time
    finish.calls.clear()
    long = "a" * (MEMO_KEY_CHARS + 1)
    kept = then_serialize(finish, repr, memo=True)
    kept(long)
    kept(long)
    kept(7)
    kept(7)
    assert finish.calls == [long, long, 7, 7]  # too long, or not a text


def test_a_mutable_finished_value_is_never_shared() -> None:
    finished = then_serialize(Counting(), lambda v: v, memo=True)
    first = finished("cc")
    second = finished("cc")
    assert first == second == {"raw": "cc"}
    assert first is not second  # a response may not alias another's dict


def test_the_limit_literal() -> None:
    assert limited("SELECT 1 ORDER BY x", 16) == "SELECT 1 ORDER BY x LIMIT 16"
    assert limited("SELECT 1 ORDER BY x", -1).endswith(" LIMIT -1")  # PostgreSQL refuses it
    for bad in (True, 1.0, "1; DROP TABLE x", None):
        with pytest.raises(TypeError):
            limited("SELECT 1", bad)  # type: ignore[arg-type]
