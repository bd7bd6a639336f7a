"""The runner's policy hooks are explicit: every projection implements them (D42)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from confluent_kafka import Message

from projections.chain import ChainProjection
from projections.iam import IamProjection
from projections.objects import ObjectsProjection
from projections.runner import Projection

HOOKS = ("resume", "restart_offsets", "read_ahead", "commit_due")


class _Plain(Projection):
    name = "plain"

    def topics(self) -> list[str]:
        return ["t"]

    def apply(self, cur: psycopg.Cursor[Any], batch: Sequence[Message]) -> int | None:
        return None


def test_defaults_are_no_ops() -> None:
    plain = _Plain()
    assert plain.pipelined is False
    assert dict(plain.restart_offsets()) == {}
    assert plain.commit_due([]) is True
    plain.read_ahead([])  # accepted, nothing to prepare


def test_topics_and_apply_are_required() -> None:
    class Incomplete(Projection):
        name = "incomplete"

        def topics(self) -> list[str]:
            return []

    with pytest.raises(TypeError):
        Incomplete()  # type: ignore[abstract]


@pytest.mark.parametrize("cls", [ChainProjection, IamProjection, ObjectsProjection])
def test_every_projection_is_a_projection(cls: type[Projection]) -> None:
    assert issubclass(cls, Projection)
    for hook in HOOKS:
        assert callable(getattr(cls, hook))


def test_only_the_chain_overrides_the_policy() -> None:
    overridden = {
        cls.__name__: sorted(h for h in HOOKS if getattr(cls, h) is not getattr(Projection, h))
        for cls in (ChainProjection, IamProjection, ObjectsProjection)
    }
    assert overridden == {
        "ChainProjection": sorted(HOOKS),
        "IamProjection": [],
        "ObjectsProjection": [],
    }
    assert ChainProjection.pipelined is True
    assert IamProjection.pipelined is False
