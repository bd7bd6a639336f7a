"""Root fields answered by one SQL statement whose JSON PostgreSQL builds (decision D59).

Theory of operation
-------------------
:func:`compile_sql` looks at each root field of a compiled query operation
(:mod:`gateway.compiled`). A root field whose whole selection is listed in
:data:`gateway.sql_fields.FIELDS` becomes one SQL expression that builds its JSON value
(``json_build_object`` in selection order with the response keys, ``json_agg`` for lists
and connection pages, correlated subqueries for nested objects and lists); all such root
fields of the operation are read by ONE statement (``SELECT (expr)::text, ...``), parsed
with orjson and placed in the response where the Python plan would have put them. Root
fields with anything unlisted stay on the Python plan.

* Arguments: a field's arguments are the same for every parent object, so each field with
  arguments has its own named parameters (``%(p<n>_name)s``). Per request they are coerced
  by graphql-core (``get_argument_values``) and checked and defaulted by the same rules as
  the resolver (:mod:`gateway.sql_fields`); a bad argument raises, so the operation falls
  back to graphene, which reports it as before. Some arguments choose a variant of the
  statement (a block by height or by hash), and page sizes are part of it (D65); the
  statement's text is made once per variant and kept (up to :data:`_MAX_TEXTS` per plan),
  so psycopg prepares it like any other statement it runs often.
* Page sizes are written into the SQL text as integer literals (``int()`` of the coerced
  argument): with ``LIMIT $n`` PostgreSQL's generic plan assumes a tenth of the table, so
  it planned the prepared statement again on every request (D65). Response keys are GraphQL
  names (``[_A-Za-z][_0-9A-Za-z]*``, checked again here), also written as literals; every
  other value is a bound parameter.
* A leaf only Python computes exactly (``recentTps``, a rounded float) is read as the
  inputs of its resolver's arithmetic and finished in Python after the statement
  (:class:`gateway.sql_fields.Leaf` ``finish``, :mod:`gateway.sql_finish`).
* What it does not change: limits and permissions are checked in
  :meth:`gateway.engine.Engine.prepare` before any path runs; a failing statement (a
  GraphQL ``Int`` out of range is cast to ``int4`` and fails) makes the operation fall
  back to graphene like any failure of the compiled path.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from graphql import (
    FieldNode,
    GraphQLField,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    OperationDefinitionNode,
    SelectionSetNode,
)
from graphql.execution.values import get_argument_values

from gateway.sql_fields import FIELDS, Leaf, Many, One, Page, Params, Same, Spec
from gateway.sql_finish import Finished, Path, then_serialize
from projections.read import Conn
from projections.read.model import int_literal


@dataclass(frozen=True, slots=True)
class Variant:
    """What a node's statement text depends on: the ``where`` it uses, and its page sizes
    (written as integer literals, so that PostgreSQL's generic plan knows them: D65)."""

    where: str = ""
    limit: int | None = None  # rows read (None: all)
    first: int | None = None  # rows shown as edges


Variants = Mapping[int, Variant]
Render = Callable[[Variants, str], str]  # (variants, parent row alias) -> SQL of the JSON
_PLAIN = Variant()
_SIZES = ("limit", "first")
_MAX_TEXTS = 64  # statement texts kept per plan (more variants are made per request)

_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*\Z")
_MAX_KEYS = 50  # json_build_object takes at most 100 arguments


class NotSql(Exception):
    """This selection needs Python: its root field stays on the Python plan."""


@dataclass(frozen=True, slots=True)
class _Bound:
    """A field with arguments: its parameters are bound per request."""

    node_id: int
    definition: GraphQLField
    node: FieldNode
    params: Params
    prefix: str


def _named(type_: Any) -> GraphQLNamedType:
    while isinstance(type_, GraphQLNonNull | GraphQLList):
        type_ = type_.of_type
    named: GraphQLNamedType = type_
    return named


def _fields(selection_set: SelectionSetNode | None) -> list[tuple[str, FieldNode]]:
    """(response key, field) of a selection the SQL path can take, in order."""
    if selection_set is None:
        raise NotSql("an object without a selection")
    out: list[tuple[str, FieldNode]] = []
    for sel in selection_set.selections:
        if not isinstance(sel, FieldNode) or sel.directives:
            raise NotSql("fragments and directives")
        key = sel.alias.value if sel.alias is not None else sel.name.value
        if not _NAME.match(key) or key in {k for k, _ in out}:
            raise NotSql("a response key selected twice")
        out.append((key, sel))
    if not out or len(out) > _MAX_KEYS:
        raise NotSql("too many keys for one json_build_object")
    return out


def _const(sql: str) -> Render:
    return lambda _v, _a: sql


def _object(parts: list[tuple[str, Render]]) -> Render:
    return lambda variants, alias: _build(parts, variants, alias)


def _names(node_id: int) -> tuple[str, str]:
    """The row alias and the parameter prefix of a subquery node."""
    return f"x{node_id}", f"p{node_id}_"


def _build(parts: list[tuple[str, Render]], variants: Variants, alias: str) -> str:
    inner = ", ".join(f"'{key}', {render(variants, alias)}" for key, render in parts)
    return f"json_build_object({inner})"


class _Compiler:
    def __init__(self, schema: GraphQLSchema) -> None:
        self.schema = schema
        self.bound: list[_Bound] = []
        self.finishes: list[Finished] = []
        self.count = 0

    def object(
        self, type_: GraphQLObjectType, selection_set: SelectionSetNode | None, path: Path
    ) -> Render:
        parts: list[tuple[str, Render]] = []
        for key, sel in _fields(selection_set):
            name = sel.name.value
            if name == "__typename":
                parts.append((key, _const(f"'{type_.name}'")))
                continue
            spec = FIELDS.get(type_.name, {}).get(name)
            definition = type_.fields.get(name)
            if spec is None or definition is None:
                raise NotSql(f"{type_.name}.{name} needs Python")
            parts.append((key, self.field(spec, definition, sel, (*path, key))))
        return _object(parts)

    def _object_type(self, definition: GraphQLField, name: str | None) -> GraphQLObjectType:
        named = _named(definition.type)
        if not isinstance(named, GraphQLObjectType) or (name and named.name != name):
            raise NotSql("not the object type the SQL reads")
        return named

    def field(self, spec: Spec, definition: GraphQLField, sel: FieldNode, path: Path) -> Render:
        """``path``: the response keys from the root field's value to this one's."""
        if isinstance(spec, Leaf):
            if sel.selection_set is not None or sel.arguments:
                raise NotSql("a leaf with a selection")
            if spec.finish is not None:
                serialize = getattr(_named(definition.type), "serialize", None)
                if serialize is None:
                    raise NotSql("a finished leaf that is not a scalar")
                finish = then_serialize(spec.finish, serialize, memo=spec.memo)
                self.finishes.append(Finished(path[0], path[1:], finish))
            return _leaf(spec.expr, "a")
        if isinstance(spec, Same):
            named = self._object_type(definition, spec.type_name)
            return self.object(named, sel.selection_set, path)
        self.count += 1
        node_id = self.count
        _, prefix = _names(node_id)
        if spec.params is not None:
            self.bound.append(_Bound(node_id, definition, sel, spec.params, prefix))
        elif definition.args:
            raise NotSql("a field whose arguments the SQL does not read")
        if isinstance(spec, One):
            if isinstance(definition.type, GraphQLNonNull):
                raise NotSql("a non-null object read by a subquery")
            named = self._object_type(definition, spec.type_name)
            return _one(spec, self.object(named, sel.selection_set, path), node_id)
        if isinstance(spec, Many):
            if spec.type_name is None:
                if sel.selection_set is not None:
                    raise NotSql("a selection on a scalar list")
                item = _leaf(spec.element, "x")
            else:
                named = self._object_type(definition, spec.type_name)
                item = self.object(named, sel.selection_set, path)
            return _many(spec, item, node_id)
        return self._page(spec, definition, sel, node_id, path)

    def _page(
        self, spec: Page, definition: GraphQLField, sel: FieldNode, node_id: int, path: Path
    ) -> Render:
        conn_type = self._object_type(definition, None)
        node_type = self.schema.get_type(spec.type_name)
        if not isinstance(node_type, GraphQLObjectType):
            raise NotSql("a page of non-objects")
        x, _ = _names(node_id)
        cursor = spec.cursor.format(x=x)
        parts: list[tuple[str, Render]] = []
        for key, part in _fields(sel.selection_set):
            name = part.name.value
            if name == "__typename":
                parts.append((key, _const(f"'{conn_type.name}'")))
            elif name == "edges":
                edge_type = _named(conn_type.fields[name].type)
                edge = self._edge(edge_type, part, node_type, cursor, (*path, key))
                parts.append((key, _edges(edge, node_id)))
            elif name == "pageInfo":
                parts.append((key, _page_info(part, node_id, cursor)))
            else:
                raise NotSql(f"{conn_type.name}.{name}")
        return _paged(spec, _object(parts), node_id)

    def _edge(
        self,
        edge_type: GraphQLNamedType,
        sel: FieldNode,
        node_type: GraphQLObjectType,
        cursor: str,
        path: Path,
    ) -> Render:
        parts: list[tuple[str, Render]] = []
        for key, part in _fields(sel.selection_set):
            name = part.name.value
            if name == "cursor":
                parts.append((key, _const(cursor)))
            elif name == "node":
                parts.append((key, self.object(node_type, part.selection_set, (*path, key))))
            elif name == "__typename":
                parts.append((key, _const(f"'{edge_type.name}'")))
            else:
                raise NotSql(f"{edge_type.name}.{name}")
        return _object(parts)


def _leaf(expr: str, name: str) -> Render:
    """A scalar expression over the row alias called ``{a}`` (parent) or ``{x}`` (own)."""
    return lambda _v, alias: expr.format(**{name: alias})


def _where(where: Mapping[str, str], variants: Variants, node_id: int, alias: str) -> str:
    x, prefix = _names(node_id)
    return where[variants.get(node_id, _PLAIN).where].format(a=alias, x=x, p=prefix)


def _size(value: int | None) -> str:
    """A page size as SQL: an integer literal (``ALL`` for none), never a string."""
    return "ALL" if value is None else int_literal(int(value))


def _rows(table: str, where: str, order: str, node_id: int, limit: int | None) -> str:
    """The rows of a list or page, numbered in order (``_rn``), at most ``limit`` of them."""
    x, _ = _names(node_id)
    return (
        f"(SELECT {x}.*, row_number() OVER (ORDER BY {order}) AS _rn FROM {table} {x} "
        f"WHERE {where} ORDER BY {order} LIMIT {_size(limit)}) {x}"
    )


def _one(spec: One, obj: Render, node_id: int) -> Render:
    x, _ = _names(node_id)
    order = f" ORDER BY {spec.order.format(x=x)}" if spec.order else ""

    def render(variants: Variants, alias: str) -> str:
        where = _where(spec.where, variants, node_id, alias)
        return f"(SELECT {obj(variants, x)} FROM {spec.table} {x} WHERE {where}{order} LIMIT 1)"

    return render


def _over_rows(spec: Many | Page, value: Render, node_id: int, wrap: str) -> Render:
    """``wrap`` (``{value}`` and ``{rows}`` in it) over the node's numbered rows."""
    x, _ = _names(node_id)
    order = spec.order.format(x=x)

    def render(variants: Variants, alias: str) -> str:
        where = _where(spec.where, variants, node_id, alias)
        rows = _rows(spec.table, where, order, node_id, variants.get(node_id, _PLAIN).limit)
        return wrap.format(value=value(variants, x), rows=rows, x=x)

    return render


def _many(spec: Many, item: Render, node_id: int) -> Render:
    wrap = "coalesce((SELECT json_agg({value} ORDER BY {x}._rn) FROM {rows}), '[]'::json)"
    return _over_rows(spec, item, node_id, wrap)


def _paged(spec: Page, connection: Render, node_id: int) -> Render:
    return _over_rows(spec, connection, node_id, "(SELECT {value} FROM {rows})")


def _first(variants: Variants, node_id: int) -> str:
    return _size(variants.get(node_id, _PLAIN).first)


def _edges(edge: Render, node_id: int) -> Render:
    """The first ``first`` rows of a page as edges, in order (``[]`` for none)."""
    x, _ = _names(node_id)
    return lambda variants, _a: (
        f"coalesce(json_agg({edge(variants, x)} ORDER BY {x}._rn) "
        f"FILTER (WHERE {x}._rn <= {_first(variants, node_id)}), '[]'::json)"
    )


def _page_info(sel: FieldNode, node_id: int, cursor: str) -> Render:
    """``hasNextPage``: the page read more rows than it shows; ``endCursor``: the cursor of
    its last edge (null without edges)."""
    x, _ = _names(node_id)
    parts: list[tuple[str, Render]] = []
    for key, part in _fields(sel.selection_set):
        name = part.name.value
        if name == "hasNextPage":
            parts.append((key, lambda v, _a: f"(count(*) > {_first(v, node_id)})"))
        elif name == "endCursor":

            def end_cursor(v: Variants, _a: str) -> str:
                shown = f"{x}._rn <= {_first(v, node_id)}"
                return f"(array_agg({cursor} ORDER BY {x}._rn DESC) FILTER (WHERE {shown}))[1]"

            parts.append((key, end_cursor))
        elif name == "__typename":
            parts.append((key, _const("'PageInfo'")))
        else:
            raise NotSql(f"PageInfo.{name}")
    return _object(parts)


@dataclass(slots=True)
class SqlPlan:
    """The root fields of an operation that one statement answers, by response key."""

    keys: tuple[str, ...]
    renders: tuple[Render, ...]
    bound: tuple[_Bound, ...]
    finishes: tuple[Finished, ...] = ()
    _texts: dict[tuple[Variant, ...], bytes] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def statement(self, variants: Variants) -> bytes:
        """The statement's text for these variants (made once per variant, and kept for the
        first :data:`_MAX_TEXTS` variants; page sizes make variants too)."""
        key = tuple(variants.get(b.node_id, _PLAIN) for b in self.bound)
        text = self._texts.get(key)
        if text is None:
            columns = ", ".join(f"({render(variants, '')})::text" for render in self.renders)
            text = f"SELECT {columns}".encode()
            with self._lock:
                if len(self._texts) < _MAX_TEXTS:
                    self._texts.setdefault(key, text)
        return text

    def fetch(self, conn: Conn, variables: dict[str, Any]) -> dict[str, Any]:
        """The JSON values of the root fields (raises on a bad argument or a failed read)."""
        variants: dict[int, Variant] = {}
        params: dict[str, Any] = {}
        for b in self.bound:
            args = get_argument_values(b.definition, b.node, variables)
            where, values = b.params(args)
            limit, first = (values.pop(name, None) for name in _SIZES)
            variants[b.node_id] = Variant(
                where, None if limit is None else int(limit), None if first is None else int(first)
            )
            for name, value in values.items():
                params[b.prefix + name] = value
        row = conn.execute(self.statement(variants), params).fetchone()
        assert row is not None
        out = {
            key: None if value is None else orjson.loads(value)  # a One without its row
            for key, value in zip(self.keys, row, strict=True)
        }
        for finished in self.finishes:
            finished.apply(out)
        return out


def compile_sql(schema: GraphQLSchema, operation: OperationDefinitionNode) -> SqlPlan | None:
    """The SQL part of a query operation's plan; None if every root field needs Python."""
    root = schema.query_type
    if root is None:
        return None
    compiler = _Compiler(schema)
    keys: list[str] = []
    renders: list[Render] = []
    for sel in operation.selection_set.selections:
        if not isinstance(sel, FieldNode) or sel.directives:
            return None  # the Python plan refuses these too
        spec = FIELDS["Query"].get(sel.name.value)
        definition = root.fields.get(sel.name.value)
        if spec is None or definition is None:
            continue
        key = sel.alias.value if sel.alias is not None else sel.name.value
        bound, finishes, count = len(compiler.bound), len(compiler.finishes), compiler.count
        try:
            render = compiler.field(spec, definition, sel, (key,))
        except NotSql:
            del compiler.bound[bound:]
            del compiler.finishes[finishes:]
            compiler.count = count
            continue
        keys.append(key)
        renders.append(render)
    if not keys:
        return None
    return SqlPlan(tuple(keys), tuple(renders), tuple(compiler.bound), tuple(compiler.finishes))
