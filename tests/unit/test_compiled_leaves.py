"""gateway.compiled: leaf fields read in one call give graphql-core's values and refusals."""

from __future__ import annotations

from typing import Any

import graphene
import pytest
from graphql import OperationDefinitionNode, parse

from gateway.compiled import Fallback, compile_operation


class Thing(graphene.ObjectType):  # type: ignore[misc]
    count = graphene.Int(required=True)
    maybe = graphene.Int()
    name = graphene.String()
    flag = graphene.Boolean()
    key = graphene.ID()


class Query(graphene.ObjectType):  # type: ignore[misc]
    thing = graphene.Field(Thing)

    @staticmethod
    def resolve_thing(_root: Any, info: Any) -> Any:
        return info.context["thing"]


SCHEMA = graphene.Schema(query=Query).graphql_schema
QUERY = "{ thing { count maybe name flag key } }"


def run(thing: Any) -> dict[str, Any]:
    operation = parse(QUERY).definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    return compile_operation(SCHEMA, operation).run({"thing": thing}, {})


class Row:
    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


def test_values_of_the_output_type_pass_through() -> None:
    row = {"count": 3, "maybe": None, "name": "a", "flag": True, "key": "k1"}
    assert run(row) == {"thing": row}
    assert run(Row(**row)) == {"thing": row}


def test_other_values_are_serialized_as_graphql_core_does() -> None:
    row = Row(count=True, maybe=2.0, name=7, flag=0, key=12)
    assert run(row) == {"thing": {"count": 1, "maybe": 2, "name": "7", "flag": False, "key": "12"}}


@pytest.mark.parametrize(
    "values",
    [
        {"count": None},  # null in a non-null position
        {"count": 2**31},  # beyond GraphQL's 32-bit Int
        {"maybe": 2.5},  # not an integer
        {"name": [1]},  # no String for a list
    ],
)
def test_what_graphql_core_refuses_falls_back(values: dict[str, Any]) -> None:
    row = {"count": 1, "maybe": 1, "name": "a", "flag": False, "key": "k", **values}
    with pytest.raises(Fallback):
        run(row)
