"""Typed errors of the gateway and their one translation to GraphQL/HTTP responses.

Theory of operation
-------------------
* Everything the gateway refuses is a :class:`GatewayError` subclass with a stable ``code``
  (``extensions.code`` of the GraphQL error), an HTTP ``status`` and optional ``extra``
  extensions (``reason`` of an auth failure, ``limit`` and ``actual`` of a hostile query).
* Errors are translated once, at the boundary (:func:`error_body`); an unexpected exception
  becomes ``INTERNAL_ERROR`` with a correlation id that is logged with the traceback. The
  client never sees a stack trace, an SQL statement or an exception's text.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from graphql import GraphQLError

log = logging.getLogger("pantheon.gateway")


class GatewayError(Exception):
    """A request refused by the gateway; ``code`` names the kind of refusal."""

    code = "BAD_REQUEST"
    status = 400

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"

    def extensions(self) -> dict[str, Any]:
        return {"code": self.code, **self.extra}

    def graphql(self) -> GraphQLError:
        """The same error as a GraphQL error (inside an execution result)."""
        return GraphQLError(self.message, extensions=self.extensions())


class Unauthenticated(GatewayError):
    """No token, or a token that does not verify (``reason`` says why)."""

    code = "UNAUTHENTICATED"
    status = 401


class Forbidden(GatewayError):
    """A valid token without the permission an operation needs (``required``)."""

    code = "FORBIDDEN"
    status = 403


class QueryTooDeep(GatewayError):
    code = "QUERY_TOO_DEEP"


class QueryTooCostly(GatewayError):
    code = "QUERY_TOO_COSTLY"


class PageTooLarge(GatewayError):
    code = "PAGE_SIZE_EXCEEDED"


class TooManyAliases(GatewayError):
    code = "TOO_MANY_ALIASES"


class BodyTooLarge(GatewayError):
    code = "BODY_TOO_LARGE"
    status = 413


class RequestTimeout(GatewayError):
    """The request head or body did not arrive in time (a slow or stalled client)."""

    code = "REQUEST_TIMEOUT"
    status = 408


class ParseFailed(GatewayError):
    code = "GRAPHQL_PARSE_FAILED"


class ValidationFailed(GatewayError):
    code = "GRAPHQL_VALIDATION_FAILED"


class BadInput(GatewayError):
    """A malformed argument (a hash that is not hex, an unknown cursor)."""

    code = "BAD_USER_INPUT"


class Unavailable(GatewayError):
    """A dependency (database, broker) did not answer."""

    code = "SERVICE_UNAVAILABLE"
    status = 503


def internal_error(exc: BaseException) -> GraphQLError:
    """An opaque error for an unexpected exception; the traceback goes to the log only."""
    incident = uuid.uuid4().hex[:12]
    log.error(
        "unexpected error", exc_info=exc, extra={"incident": incident, "type": type(exc).__name__}
    )
    return GraphQLError(
        f"internal error (incident {incident})",
        extensions={"code": "INTERNAL_ERROR", "incident": incident},
    )


def format_error(error: GraphQLError) -> dict[str, Any]:
    """The client's view of an execution error: message, path, extensions; nothing else."""
    original = error.original_error
    if isinstance(original, GatewayError):
        error = GraphQLError(
            original.message, path=error.path, nodes=error.nodes, extensions=original.extensions()
        )
    elif isinstance(original, GraphQLError):  # e.g. a variable of the wrong type
        error = GraphQLError(
            original.message,
            path=error.path,
            nodes=error.nodes,
            extensions={"code": BadInput.code, **(original.extensions or {})},
        )
    elif original is not None:
        replaced = internal_error(original)
        error = GraphQLError(
            replaced.message, path=error.path, nodes=error.nodes, extensions=replaced.extensions
        )
    formatted: dict[str, Any] = dict(error.formatted)
    formatted.setdefault("extensions", {}).setdefault("code", "GRAPHQL_ERROR")
    return formatted


def error_body(errors: Sequence[GatewayError | GraphQLError]) -> dict[str, Any]:
    """A GraphQL response body holding only ``errors``."""
    out: list[Mapping[str, Any]] = []
    for err in errors:
        out.append(format_error(err.graphql() if isinstance(err, GatewayError) else err))
    return {"errors": out}
