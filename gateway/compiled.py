"""A compiled execution path for the common shapes of query operations.

Theory of operation
-------------------
graphql-core's executor pays, for every field of every object, for a ``ResolveInfo``, a
response path, awaitable checks, error bookkeeping and a walk over the field's type
wrappers. The explorer's queries are plain trees of fields over object types, so
:func:`compile_operation` turns such an operation once (per query text and operation name)
into a tree of closures that call **the same resolvers** with the same coerced arguments
(graphql-core's own ``get_argument_values`` and ``get_variable_values``) and the same
scalar ``serialize`` functions, and so produce the same ``data``.

* What is compiled: query operations whose selections are fields (with aliases and
  arguments) and ``__typename`` over object, list, non-null, scalar and enum types. Anything
  else -- fragments, directives, a response key selected twice, introspection, abstract
  types, mutations and subscriptions -- gets no plan (:class:`Unsupported`) and runs on
  graphene, as before.
* What falls back at run time: the compiled path never formats errors. Any exception
  (a resolver refusing its input, a null in a non-null position, a value a scalar cannot
  serialize, invalid variables) makes :meth:`Plan.run` raise :class:`Fallback`; the engine
  then executes the whole operation with graphene, which reports the errors exactly as it
  always did (queries only read, so running them again is harmless).
* Nothing here decides who may read what: limits and permissions are checked by
  :mod:`gateway.engine` before either path runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphene.types.resolver import dict_or_attr_resolver
from graphql import (
    FieldNode,
    GraphQLEnumType,
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLSchema,
    OperationDefinitionNode,
    SelectionSetNode,
)
from graphql.execution.values import get_argument_values, get_variable_values
from graphql.pyutils import Undefined
from graphql.type.scalars import (
    GRAPHQL_MAX_INT,
    GRAPHQL_MIN_INT,
    serialize_boolean,
    serialize_id,
    serialize_int,
    serialize_string,
)

from gateway.sql_json import SqlPlan, compile_sql

Completer = Callable[[Any, Any], Any]  # (value, info) -> JSON-ready value
Resolver = Callable[..., Any]


class Unsupported(Exception):
    """The operation has a shape the compiled path does not handle: run it on graphene."""


class Fallback(Exception):
    """The compiled run failed (an error to report): run the operation on graphene."""


@dataclass(slots=True)
class RunInfo:
    """The ``info`` of a compiled run: the context, and the coerced variables."""

    context: Any
    variables: dict[str, Any]
    sql: dict[str, Any] = field(default_factory=dict)  # root values read by the SQL plan


@dataclass(frozen=True, slots=True)
class _Field:
    key: str
    resolve: Resolver
    args: dict[str, Any] | None  # None: depend on variables, computed per request
    definition: GraphQLField | None
    node: FieldNode
    complete: Completer


def _default_resolver_args(definition: GraphQLField) -> tuple[Any, Any] | None:
    """(attribute name, default) if the field has graphene's default resolver, else None."""
    resolve = definition.resolve
    if (
        isinstance(resolve, functools.partial)
        and resolve.func is dict_or_attr_resolver
        and len(resolve.args) == 2
        and not resolve.keywords
    ):
        return resolve.args[0], resolve.args[1]
    return None


def _fast_resolver(definition: GraphQLField) -> Resolver:
    """The field's resolver; graphene's default (dict key or attribute) without the partial."""
    resolve = definition.resolve
    default_args = _default_resolver_args(definition)
    if default_args is not None:
        name, default = default_args

        def attr(root: Any, _info: Any, **_args: Any) -> Any:
            if isinstance(root, dict):
                return root.get(name, default)
            return getattr(root, name, default)

        return attr
    if resolve is None:
        raise Unsupported("field without a resolver")
    return resolve


def _depends_on_variables(node: FieldNode) -> bool:
    return any(_has_variable(arg.value) for arg in node.arguments)


def _has_variable(value: Any) -> bool:
    if value.kind == "variable":
        return True
    children = [*(getattr(value, "values", ()) or ())]
    children += [f.value for f in getattr(value, "fields", ()) or ()]
    return any(_has_variable(child) for child in children)


def _fast_int(value: Any) -> Any:
    if type(value) is int and GRAPHQL_MIN_INT <= value <= GRAPHQL_MAX_INT:
        return value
    return serialize_int(value)


def _fast_str(value: Any) -> Any:
    return value if type(value) is str else serialize_string(value)


def _fast_id(value: Any) -> Any:
    return value if type(value) is str else serialize_id(value)


def _fast_bool(value: Any) -> Any:
    return value if type(value) is bool else serialize_boolean(value)


#: graphql-core's serializers of the built-in scalars, and the same function with the
#: common case (a value already of the output type) first
_FAST_SERIALIZE: dict[Callable[[Any], Any], Callable[[Any], Any]] = {
    serialize_int: _fast_int,
    serialize_string: _fast_str,
    serialize_id: _fast_id,
    serialize_boolean: _fast_bool,
}


def _completed(value: Any, _info: Any) -> Any:  # marks a step that completes its value
    return value


def _direct_leaf(definition: GraphQLField, node: FieldNode) -> Resolver | None:
    """For a field without arguments, with graphene's default resolver and a built-in
    scalar type (nullable or not): one function that reads, checks and serializes it --
    the same value as resolve, non-null check and ``serialize`` in turn, in one call."""
    default_args = _default_resolver_args(definition)
    if default_args is None or node.selection_set is not None:
        return None
    type_, non_null = definition.type, False
    if isinstance(type_, GraphQLNonNull):
        type_, non_null = type_.of_type, True
    if not isinstance(type_, GraphQLScalarType):
        return None
    fast = _FAST_SERIALIZE.get(type_.serialize)
    if fast is None:
        return None
    name, default = default_args

    def direct(root: Any, _info: Any) -> Any:
        value = root.get(name, default) if isinstance(root, dict) else getattr(root, name, default)
        if value is None:
            if non_null:
                raise Fallback("null in a non-null position")
            return None
        return fast(value)  # these serializers return a value or raise (then: Fallback)

    return direct


def _step(f: _Field) -> Callable[[Any, RunInfo], Any]:
    """One field of an object: (source, info) -> its response value."""
    resolve, complete, static = f.resolve, f.complete, f.args
    if complete is _completed:
        return resolve
    if static is not None:
        if not static:
            return lambda root, info: complete(resolve(root, info), info)
        return lambda root, info: complete(resolve(root, info, **static), info)
    definition, node = f.definition, f.node
    assert definition is not None

    def with_variables(root: Any, info: RunInfo) -> Any:
        args = get_argument_values(definition, node, info.variables)
        return complete(resolve(root, info, **args), info)

    return with_variables


def _sql_value(key: str) -> Callable[[Any, RunInfo], Any]:
    return lambda _root, info: info.sql[key]


class _Compiler:
    def __init__(self, schema: GraphQLSchema) -> None:
        self.schema = schema

    def selection(
        self,
        parent: GraphQLObjectType,
        selection_set: SelectionSetNode,
        from_sql: tuple[str, ...] = (),
    ) -> Completer:
        """The object's fields in order; those keyed in ``from_sql`` are read from the values
        the SQL plan fetched (:mod:`gateway.sql_json`), the others computed here."""
        fields: list[_Field] = []
        keys: set[str] = set()
        for sel in selection_set.selections:
            if not isinstance(sel, FieldNode):
                raise Unsupported("fragments run on graphene")
            if sel.directives:
                raise Unsupported("directives run on graphene")
            key = sel.alias.value if sel.alias is not None else sel.name.value
            if key in keys:
                raise Unsupported("a response key selected twice is merged by graphene")
            keys.add(key)
            name = sel.name.value
            if name == "__typename":
                type_name = parent.name
                fields.append(
                    _Field(
                        key,
                        lambda _root, _info, _n=type_name: _n,
                        {},
                        None,
                        sel,
                        lambda value, _info: value,
                    )
                )
                continue
            if name.startswith("__"):
                raise Unsupported("introspection runs on graphene")
            definition = parent.fields.get(name)
            if definition is None:
                raise Unsupported(f"unknown field {name}")
            args = None if _depends_on_variables(sel) else get_argument_values(definition, sel)
            direct = _direct_leaf(definition, sel) if args == {} else None
            if direct is not None:
                fields.append(_Field(key, direct, {}, None, sel, _completed))
                continue
            complete = self.complete(definition.type, sel)
            fields.append(_Field(key, _fast_resolver(definition), args, definition, sel, complete))
        steps = tuple((f.key, _sql_value(f.key) if f.key in from_sql else _step(f)) for f in fields)

        def run_object(root: Any, info: RunInfo) -> dict[str, Any]:
            return {key: step(root, info) for key, step in steps}

        return run_object

    def complete(self, type_: GraphQLOutputType, node: FieldNode) -> Completer:
        if isinstance(type_, GraphQLNonNull):
            inner = self.complete(type_.of_type, node)

            def non_null(value: Any, info: Any) -> Any:
                if value is None:
                    raise Fallback("null in a non-null position")
                out = inner(value, info)
                if out is None:
                    raise Fallback("null in a non-null position")
                return out

            return non_null
        if isinstance(type_, GraphQLList):
            item = self.complete(type_.of_type, node)

            def list_of(value: Any, info: Any) -> Any:
                if value is None:
                    return None
                if isinstance(value, str | bytes | Mapping):
                    raise Fallback("a list field resolved to a non-list")
                return [item(v, info) for v in value]

            return list_of
        if isinstance(type_, GraphQLScalarType | GraphQLEnumType):
            if node.selection_set is not None:
                raise Unsupported("selection on a leaf")
            serialize = type_.serialize

            def leaf(value: Any, _info: Any) -> Any:
                if value is None:
                    return None
                out = serialize(value)
                if out is None or out is Undefined:
                    raise Fallback("a value the scalar cannot serialize")
                return out

            return leaf
        if isinstance(type_, GraphQLObjectType):
            if node.selection_set is None or type_.is_type_of is not None:
                raise Unsupported("object without selection or with is_type_of")
            run_object = self.selection(type_, node.selection_set)

            def obj(value: Any, info: Any) -> Any:
                return None if value is None else run_object(value, info)

            return obj
        raise Unsupported(f"type {type_} runs on graphene")


@dataclass(frozen=True, slots=True)
class Plan:
    """A compiled query operation."""

    operation: OperationDefinitionNode
    schema: GraphQLSchema
    root: Completer
    sql: SqlPlan | None = None  # the root fields one SQL statement answers

    def run(self, context: Any, raw_variables: Mapping[str, Any]) -> dict[str, Any]:
        """The ``data`` of the operation; :class:`Fallback` for anything graphene must report."""
        coerced = get_variable_values(
            self.schema, self.operation.variable_definitions or (), dict(raw_variables)
        )
        if isinstance(coerced, list):
            raise Fallback("invalid variables")
        info = RunInfo(context, coerced)
        try:
            if self.sql is not None:
                info.sql = self.sql.fetch(context.conn(), coerced)
            data: dict[str, Any] = self.root(None, info)
        except Fallback:
            raise
        except Exception as exc:
            raise Fallback(type(exc).__name__) from exc
        return data


def compile_operation(
    schema: GraphQLSchema, operation: OperationDefinitionNode, *, sql_json: bool = True
) -> Plan:
    """Compile a validated query operation; :class:`Unsupported` if graphene must run it.
    With ``sql_json``, the root fields PostgreSQL can answer as JSON are read by one
    statement (:func:`gateway.sql_json.compile_sql`, decision D59)."""
    if operation.operation.value != "query" or operation.directives:
        raise Unsupported("only queries are compiled")
    root = schema.query_type
    if root is None:
        raise Unsupported("no query type")
    compiler = _Compiler(schema)
    compiler.selection(root, operation.selection_set)  # raises Unsupported for graphene's shapes
    sql = compile_sql(schema, operation) if sql_json else None
    keys = () if sql is None else sql.keys
    return Plan(operation, schema, compiler.selection(root, operation.selection_set, keys), sql)
