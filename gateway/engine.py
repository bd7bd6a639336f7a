"""From a GraphQL request to a result: parse, limit, validate, authorize, execute, cache.

Theory of operation
-------------------
* :meth:`Engine.prepare` turns ``(query, variables, operationName)`` into a
  :class:`Prepared` operation or raises a :class:`~gateway.errors.GatewayError`: parsing,
  validation, the operation's root fields and its compiled plan are cached per query text
  (bounded LRU of :class:`_Document`); the limits of :mod:`gateway.limits` are checked on
  every request, their verdict cached with the document per value of the variables that
  set page sizes (the only input of the verdict besides the text); the permission every
  root field needs (:func:`gateway.field_permissions.required_permission`) is checked against the
  caller's claims on every request -- all before anything is executed.
* :meth:`Engine.run` runs synchronously (call it from a worker thread): resolvers use one
  pooled connection for the whole request. A query with a compiled plan
  (:mod:`gateway.compiled`) runs without graphql-core's per-field machinery; if that run
  meets anything to report, the operation runs again on graphene, whose result is the
  answer. Resolver exceptions are formatted by :func:`gateway.errors.format_error`: typed
  errors keep their code, anything else becomes an opaque ``INTERNAL_ERROR``.
* :func:`encode` serializes a response with orjson (the standard library for what orjson
  refuses, such as integers beyond 64 bits).
* Chain data changes only when a block is projected, so the JSON of a successful query that
  does not ask for ``me`` is cached per projected height (``version``); the cache is emptied
  when the height moves. Callers were authorized before the cache is consulted.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    execute,
    validate,
)
from graphql.utilities import get_operation_ast

from gateway.auth.tokens import Claims
from gateway.authn import require
from gateway.compiled import Fallback, Plan, Unsupported, compile_operation
from gateway.context import RequestContext, Services
from gateway.errors import BadInput, GatewayError, ValidationFailed, format_error
from gateway.field_permissions import required_permission
from gateway.limits import Limits, check_document, page_variables, parse_query
from gateway.schema import SCHEMA

_MAX_VERDICTS = 64  # limit verdicts kept per operation (one per page-size variable values)


def encode(body: Any) -> bytes:
    """Compact JSON of a response body."""
    try:
        return orjson.dumps(body)
    except TypeError:  # e.g. an integer beyond 64 bits
        return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Prepared:
    """A parsed, validated, authorized operation ready to execute."""

    document: DocumentNode
    operation: OperationDefinitionNode
    kind: str  # query, mutation, subscription
    query: str
    variables: Mapping[str, Any]
    operation_name: str | None
    cacheable: bool
    cost: int
    plan: Plan | None = None


@dataclass(slots=True)
class _Operation:
    """What one operation of a cached document needs on every request."""

    operation: OperationDefinitionNode
    kind: str
    fields: list[str]
    page_variables: tuple[str, ...]
    plan: Plan | None = None
    compiled: bool = False
    verdicts: dict[tuple[Any, ...], int | GatewayError] = field(default_factory=dict)


@dataclass(slots=True)
class _Document:
    """A parsed document, whether it validated, and its operations by name."""

    document: DocumentNode
    valid: bool = False
    operations: dict[str | None, _Operation] = field(default_factory=dict)


def _verdict_key(names: tuple[str, ...], variables: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """The page-size variables' values (with their types), None if one is not a scalar."""
    key: list[Any] = []
    for name in names:
        value = variables.get(name)
        if not isinstance(value, int | float | str | None):
            return None
        key.append((type(value).__name__, value))
    return tuple(key)


def root_fields(
    selection_set: SelectionSetNode, fragments: Mapping[str, FragmentDefinitionNode]
) -> list[str]:
    """Names of the root fields, through fragments."""
    out: list[str] = []
    stack, seen = [selection_set], set()
    while stack:
        for sel in stack.pop().selections:
            if isinstance(sel, FieldNode):
                out.append(sel.name.value)
            elif isinstance(sel, InlineFragmentNode):
                stack.append(sel.selection_set)
            elif isinstance(sel, FragmentSpreadNode) and sel.name.value not in seen:
                seen.add(sel.name.value)
                fragment = fragments.get(sel.name.value)
                if fragment is not None:
                    stack.append(fragment.selection_set)
    return out


class Engine:
    """Prepares and executes operations of one gateway."""

    def __init__(
        self,
        services: Services,
        limits: Limits,
        *,
        cache_responses: bool = True,
        schema: GraphQLSchema | None = None,
        max_documents: int = 512,
        max_responses: int = 256,
        sql_json: bool = True,
    ) -> None:
        self.services = services
        self.limits = limits
        self.schema = schema or SCHEMA.graphql_schema
        self.cache_responses = cache_responses
        self.sql_json = sql_json  # root fields PostgreSQL answers as JSON (D59)
        self._lock = threading.Lock()
        self._documents: OrderedDict[str, _Document | GatewayError] = OrderedDict()
        self._max_documents = max_documents
        self.compiled_runs = 0  # operations answered by the compiled path
        self.fallbacks = 0  # compiled runs that handed over to graphene
        self._responses: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()
        self._responses_version: int | None = None
        self._max_responses = max_responses

    # -- preparing ------------------------------------------------------------------------
    def _document(self, query: str) -> _Document:
        with self._lock:
            hit = self._documents.get(query)
            if hit is not None:
                self._documents.move_to_end(query)
        if hit is None:
            try:
                hit = _Document(parse_query(query, self.limits))
            except GatewayError as exc:
                hit = exc
            with self._lock:
                self._documents[query] = hit
                while len(self._documents) > self._max_documents:
                    self._documents.popitem(last=False)
        if isinstance(hit, GatewayError):
            raise hit.with_traceback(None)
        return hit

    def _operation(self, entry: _Document, operation_name: str | None) -> _Operation:
        known = entry.operations.get(operation_name)
        if known is not None:
            return known
        document = entry.document
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            raise BadInput("name the operation to run ('operationName')")
        fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        found = _Operation(
            operation,
            operation.operation.value,
            root_fields(operation.selection_set, fragments),
            page_variables(document),
        )
        with self._lock:
            entry.operations.setdefault(operation_name, found)
            return entry.operations[operation_name]

    def _plan(self, op: _Operation) -> Plan | None:
        """The operation's compiled plan (compiled once, after validation), if it has one."""
        if not op.compiled:
            try:
                op.plan = compile_operation(self.schema, op.operation, sql_json=self.sql_json)
            except Unsupported:
                op.plan = None  # runs on graphene
            op.compiled = True
        return op.plan

    def _check_limits(self, entry: _Document, op: _Operation, variables: Mapping[str, Any]) -> int:
        key = _verdict_key(op.page_variables, variables)
        verdict = op.verdicts.get(key) if key is not None else None
        if verdict is None:
            try:
                verdict = check_document(
                    self.schema, entry.document, op.operation, variables, self.limits
                )
            except GatewayError as exc:
                verdict = exc
            if key is not None:
                with self._lock:
                    if len(op.verdicts) >= _MAX_VERDICTS:
                        op.verdicts.clear()
                    op.verdicts[key] = verdict
        if isinstance(verdict, GatewayError):
            raise verdict.with_traceback(None)
        return verdict

    def prepare(
        self,
        query: Any,
        variables: Any,
        operation_name: Any,
        claims: Claims | None,
        *,
        transport: str = "http",
    ) -> Prepared:
        """Check everything that can be checked before execution; raise the first refusal."""
        if not isinstance(query, str) or not query.strip():
            raise BadInput("the request needs a 'query' string")
        if variables is None:
            variables = {}
        if not isinstance(variables, dict):
            raise BadInput("'variables' must be an object")
        if operation_name is not None and not isinstance(operation_name, str):
            raise BadInput("'operationName' must be a string")
        entry = self._document(query)
        op = self._operation(entry, operation_name)
        cost = self._check_limits(entry, op, variables)
        kind = op.kind
        if kind == "subscription" and transport == "http":
            raise BadInput("subscriptions run over WebSocket (graphql-transport-ws) at /graphql")
        if kind != "subscription" and transport == "ws":
            raise BadInput("only subscriptions run over the WebSocket")
        self._validate(entry)
        for name in op.fields:
            permission = required_permission(kind, name)
            if permission is not None:
                require(claims, permission or None)
        cacheable = kind == "query" and "me" not in op.fields
        return Prepared(
            entry.document,
            op.operation,
            kind,
            query,
            variables,
            operation_name,
            cacheable,
            cost,
            self._plan(op),
        )

    def _validate(self, entry: _Document) -> None:
        if entry.valid:
            return
        errors = validate(self.schema, entry.document)
        if not errors:
            entry.valid = True
        if errors:
            raise ValidationFailed(
                "; ".join(e.message for e in errors[:5]),
                details=[e.message for e in errors[:20]],
            )

    # -- executing ------------------------------------------------------------------------
    def run(
        self,
        prepared: Prepared,
        claims: Claims | None,
        source: str = "",
        root: Any = None,
    ) -> dict[str, Any]:
        """Execute ``prepared`` (synchronously) and return the response body."""
        context = RequestContext(self.services, claims, source)
        try:
            if prepared.plan is not None:
                try:
                    data = prepared.plan.run(context, prepared.variables)
                except Fallback:
                    self.fallbacks += 1
                else:
                    self.compiled_runs += 1
                    return {"data": data}
            result = execute(
                self.schema,
                prepared.document,
                root_value=root,
                context_value=context,
                variable_values=dict(prepared.variables),
                operation_name=prepared.operation_name,
            )
        finally:
            context.close()
        assert isinstance(result, ExecutionResult)
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            body["errors"] = [format_error(e) for e in result.errors]
        return body

    # -- response cache -------------------------------------------------------------------
    @staticmethod
    def _key(prepared: Prepared) -> tuple[str, str, str]:
        variables = json.dumps(prepared.variables, sort_keys=True, separators=(",", ":"))
        return prepared.query, variables, prepared.operation_name or ""

    def cached(self, prepared: Prepared, version: int | None) -> bytes | None:
        """The cached response of ``prepared`` at ``version`` (projected height)."""
        if not (self.cache_responses and prepared.cacheable) or version is None:
            return None
        with self._lock:
            if self._responses_version != version:
                return None
            return self._responses.get(self._key(prepared))

    def remember(self, prepared: Prepared, version: int | None, payload: bytes) -> None:
        """Cache a successful response computed while ``version`` was current."""
        if not (self.cache_responses and prepared.cacheable) or version is None:
            return
        with self._lock:
            if self._responses_version != version:
                if self._responses_version is not None and version < self._responses_version:
                    return
                self._responses.clear()
                self._responses_version = version
            self._responses[self._key(prepared)] = payload
            while len(self._responses) > self._max_responses:
                self._responses.popitem(last=False)
