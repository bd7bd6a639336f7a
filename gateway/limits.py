"""Limits on hostile queries, checked on the parsed document before it is validated or run.

Theory of operation
-------------------
* The body is refused above ``max_body_bytes`` before it is read whole, and the parser stops
  after ``max_tokens`` tokens; a parse that would recurse too deep is reported as too deep.
* :func:`check_document` walks the selected operation once, following fragments (a cycle is
  cut; validation reports it afterwards) and counts:
  - **depth**: nesting of fields below the root (the root fields are depth 1);
  - **cost**: every field costs the number of times it may be resolved, i.e. the product of
    the page sizes of the list fields above it. A field with ``first``/``last``/``limit``
    multiplies by that value (or the argument's default); a plain list field multiplies by
    ``default_list_size``; the ``edges`` list of a connection is already counted by its page;
  - **page size**: every ``first``/``last``/``limit`` is at most ``max_page_size``, whether
    it is a literal, a variable's value (an integral float such as ``1e9`` counts: GraphQL
    coerces it to an Int) or a variable's default;
  - **aliases**: at most ``max_aliases`` in the document.
* Introspection fields (``__schema``, ``__type``, ``__typename``) are bounded by the schema
  and exempt from depth and cost, so GraphiQL-style playgrounds work. The walk stops at the
  first exceeded limit and visits at most ``max_nodes`` selections, so checking is cheap
  even for documents crafted to expand exponentially through fragments.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    parse,
)
from graphql.error import GraphQLSyntaxError

from gateway.errors import (
    PageTooLarge,
    ParseFailed,
    QueryTooCostly,
    QueryTooDeep,
    TooManyAliases,
)

PAGE_ARGS = ("first", "last", "limit")


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The gateway's limits; the defaults fit the explorer with room to spare."""

    max_body_bytes: int = 32 * 1024
    max_tokens: int = 5000
    max_depth: int = 10
    max_cost: int = 5000
    max_page_size: int = 100
    max_aliases: int = 30
    default_list_size: int = 20
    max_nodes: int = 20_000


@dataclass(slots=True)
class _Walk:
    limits: Limits
    schema: GraphQLSchema
    variables: Mapping[str, Any]
    fragments: dict[str, FragmentDefinitionNode]
    defaults: dict[str, Any] = field(default_factory=dict)
    cost: int = 0
    depth: int = 0
    nodes: int = 0
    visiting: set[str] = field(default_factory=set)


def parse_query(text: str, limits: Limits) -> DocumentNode:
    """Parse with a token limit; syntax errors and runaway nesting become typed errors."""
    try:
        return parse(text, no_location=False, max_tokens=limits.max_tokens)
    except RecursionError:
        raise QueryTooDeep("the query is nested too deeply", limit=limits.max_depth) from None
    except GraphQLSyntaxError as exc:
        if "token limit" in exc.message.lower():
            raise ParseFailed(
                f"the document has more than {limits.max_tokens} tokens", limit=limits.max_tokens
            ) from None
        raise ParseFailed(f"syntax error: {exc.message}") from None


def fields_of(document: DocumentNode) -> Iterator[FieldNode]:
    """Every field node anywhere in the document (operations and fragments)."""
    stack: list[SelectionSetNode] = []
    for definition in document.definitions:
        selection_set = getattr(definition, "selection_set", None)
        if selection_set is not None:
            stack.append(selection_set)
    while stack:
        for sel in stack.pop().selections:
            if isinstance(sel, FieldNode):
                yield sel
            sub = getattr(sel, "selection_set", None)
            if sub is not None:
                stack.append(sub)


def count_aliases(document: DocumentNode) -> int:
    """Aliased fields anywhere in the document."""
    return sum(1 for node in fields_of(document) if node.alias is not None)


def page_variables(document: DocumentNode) -> tuple[str, ...]:
    """Names of the variables given to a page-size argument anywhere in the document: with
    the text, their values are all the limits' verdict depends on."""
    return tuple(
        sorted(
            {
                arg.value.name.value
                for node in fields_of(document)
                for arg in node.arguments
                if arg.name.value in PAGE_ARGS and isinstance(arg.value, VariableNode)
            }
        )
    )


def check_document(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: Mapping[str, Any],
    limits: Limits,
) -> int:
    """Raise the first exceeded limit; returns the query's cost."""
    aliases = count_aliases(document)
    if aliases > limits.max_aliases:
        raise TooManyAliases(
            f"the document has {aliases} aliases; at most {limits.max_aliases} are allowed",
            limit=limits.max_aliases,
            actual=aliases,
        )
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    root = schema.get_root_type(operation.operation)
    if root is None:
        return 0
    defaults = {
        d.variable.name.value: int(d.default_value.value)
        for d in operation.variable_definitions or ()
        if isinstance(d.default_value, IntValueNode)
    }
    walk = _Walk(limits, schema, variables, fragments, defaults)
    _selections(walk, operation.selection_set, root, 0, 1)
    return walk.cost


def _page_size(walk: _Walk, node: FieldNode, definition: Any) -> int | None:
    for arg in node.arguments:
        name = arg.name.value
        if name not in PAGE_ARGS:
            continue
        value: Any = None
        if isinstance(arg.value, IntValueNode):
            value = int(arg.value.value)
        elif isinstance(arg.value, VariableNode):
            variable = arg.value.name.value
            value = walk.variables.get(variable, walk.defaults.get(variable))
        if isinstance(value, float):
            # GraphQL coerces an integral float to an Int; check what would run
            value = int(value) if math.isfinite(value) else walk.limits.max_page_size + 1
        if isinstance(value, int) and not isinstance(value, bool):
            if value > walk.limits.max_page_size:
                raise PageTooLarge(
                    f"{node.name.value}({name}: {value}) exceeds the page size limit "
                    f"of {walk.limits.max_page_size}",
                    limit=walk.limits.max_page_size,
                    actual=value,
                )
            return max(value, 0)
    for name in PAGE_ARGS:
        arg_def = definition.args.get(name)
        if arg_def is not None and isinstance(arg_def.default_value, int):
            return int(arg_def.default_value)
    return None


def _selections(
    walk: _Walk,
    selection_set: SelectionSetNode,
    parent: GraphQLNamedType,
    depth: int,
    multiplier: int,
) -> None:
    limits = walk.limits
    for sel in selection_set.selections:
        walk.nodes += 1
        if walk.nodes > limits.max_nodes:
            raise QueryTooCostly("the query expands to too many selections", limit=limits.max_cost)
        if isinstance(sel, FieldNode):
            _field(walk, sel, parent, depth, multiplier)
        elif isinstance(sel, InlineFragmentNode):
            cond = sel.type_condition
            target = walk.schema.get_type(cond.name.value) if cond is not None else parent
            _selections(walk, sel.selection_set, target or parent, depth, multiplier)
        elif isinstance(sel, FragmentSpreadNode):
            name = sel.name.value
            fragment = walk.fragments.get(name)
            if fragment is None or name in walk.visiting:
                continue  # unknown or cyclic: validation reports it
            target = walk.schema.get_type(fragment.type_condition.name.value) or parent
            walk.visiting.add(name)
            _selections(walk, fragment.selection_set, target, depth, multiplier)
            walk.visiting.discard(name)


def _field(
    walk: _Walk, node: FieldNode, parent: GraphQLNamedType, depth: int, multiplier: int
) -> None:
    limits = walk.limits
    name = node.name.value
    if name.startswith("__"):
        return
    if not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
        return
    definition = parent.fields.get(name)
    if definition is None:
        return  # validation reports unknown fields
    here = depth + 1
    if here > limits.max_depth:
        raise QueryTooDeep(
            f"the query is nested deeper than {limits.max_depth} levels",
            limit=limits.max_depth,
            actual=here,
        )
    walk.cost += multiplier
    if walk.cost > limits.max_cost:
        raise QueryTooCostly(
            f"the query may resolve more than {limits.max_cost} fields "
            "(list sizes times nesting); ask for smaller pages or fewer nested lists",
            limit=limits.max_cost,
        )
    size = _page_size(walk, node, definition)
    is_list = isinstance(get_nullable_type(definition.type), GraphQLList)
    if size is not None:
        child = multiplier * size
    elif is_list and not parent.name.endswith("Connection"):
        child = multiplier * limits.default_list_size
    else:
        child = multiplier
    if node.selection_set is not None:
        _selections(walk, node.selection_set, get_named_type(definition.type), here, child)
