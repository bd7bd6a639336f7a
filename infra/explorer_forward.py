"""What the local explorer forwards to a remote gateway, and how (D55).

The local explorer (:mod:`infra.explorer`) serves the page's code from this installation and
asks a gateway chosen by the user only for public chain data. This module is that asking:

* :func:`public_request` turns a ``POST /graphql`` body into the body to forward, or refuses
  it: a JSON object whose ``query`` parses within the gateway's own limits
  (:class:`gateway.limits.Limits`) and whose every operation is a ``query`` selecting at its
  root only fields of the public chain (every ``Query`` field of :data:`gateway.schema.SCHEMA`
  but ``me``) or introspection. Mutations (login included), subscriptions and ``me`` are
  refused with ``NOT_FORWARDED`` (403); a body above the limit with ``BODY_TOO_LARGE`` (413).
  Only ``query``, ``variables`` and ``operationName`` are forwarded, re-serialized.
* :class:`RemoteGateway` sends it, and fetches ``/genesis.avro``: no cookie and no header of
  the browser's is sent, only ``Authorization`` with the token the user gave the command
  (none by default); redirects are not followed; an answer larger than its limit or slower
  than the deadline (whole answer, not per read) is refused with ``BAD_GATEWAY`` (502) or
  ``GATEWAY_TIMEOUT`` (504); only the status and the body are passed back, as JSON (GraphQL)
  or as bytes (genesis: the page hashes them against the pinned genesis hash).
* :meth:`RemoteGateway.object_proof` fetches ``GET /objects/<id>/proof`` (D60) from the same
  gateway, and only when the user gave the command a token (objects are private): the token
  goes with that request alone, to the configured address and no other (the path is built
  here from a checked data id; redirects are not followed). Without a token the request is
  refused locally with ``NOT_FORWARDED``, whose message says to pass ``--token-file``. Only a
  JSON object is passed back (the proof, or the gateway's typed error).
* :meth:`RemoteGateway.probe` is the start-up check: a gateway that cannot be reached, or that
  answers ``{ summary { height } }`` with anything but GraphQL data, is a one-line
  :class:`ExplorerError` (exit 2 from ``pantheon explorer``).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.client import HTTPResponse
from typing import Any, cast

from graphql import FieldNode, FragmentDefinitionNode, OperationDefinitionNode, OperationType

from gateway.errors import BodyTooLarge, GatewayError
from gateway.limits import Limits, parse_query
from gateway.schema import SCHEMA
from ledger.context import is_id


class ExplorerError(RuntimeError):
    """The local explorer cannot start: the gateway is unreachable or is not one."""


class NotForwarded(GatewayError):
    """A request the local explorer does not forward (not a public chain read)."""

    code = "NOT_FORWARDED"
    status = 403


class BadGateway(GatewayError):
    """The remote gateway answered something the local explorer does not pass on."""

    code = "BAD_GATEWAY"
    status = 502


class GatewayTimeout(GatewayError):
    code = "GATEWAY_TIMEOUT"
    status = 504


INTROSPECTION = frozenset({"__schema", "__type", "__typename"})
PUBLIC_FIELDS = frozenset(SCHEMA.graphql_schema.query_type.fields) - {"me"}
"""The root fields a request may select: the chain's tables (D39), not the caller's account."""


@dataclass(frozen=True, slots=True)
class ForwardLimits:
    """Limits of the local explorer's forwarding (defaults fit the explorer's pages)."""

    request: Limits = field(default_factory=Limits)
    max_answer_bytes: int = 8 * 1024 * 1024
    max_genesis_bytes: int = 4 * 1024 * 1024
    timeout_s: float = 15.0


def public_request(body: bytes, limits: Limits) -> bytes:
    """The body to forward for this ``POST /graphql`` body, or a typed refusal."""
    if len(body) > limits.max_body_bytes:
        raise BodyTooLarge(f"request body above {limits.max_body_bytes} bytes")
    try:
        request = json.loads(body)
    except ValueError:
        raise NotForwarded("the body is not JSON") from None
    if not isinstance(request, dict) or not isinstance(request.get("query"), str):
        raise NotForwarded('the body is not a GraphQL request {"query": ...}')
    variables, name = request.get("variables"), request.get("operationName")
    if not isinstance(variables, dict | None) or not isinstance(name, str | None):
        raise NotForwarded("variables must be an object and operationName a string")
    for definition in parse_query(request["query"], limits).definitions:
        if isinstance(definition, FragmentDefinitionNode):
            continue
        if not isinstance(definition, OperationDefinitionNode):
            raise NotForwarded("only queries are forwarded")
        if definition.operation is not OperationType.QUERY:
            what = definition.operation.value
            raise NotForwarded(f"a {what} is not forwarded: this explorer only reads the chain")
        for selection in definition.selection_set.selections:
            if not isinstance(selection, FieldNode):
                raise NotForwarded("fragments at the root of a query are not forwarded")
            root = selection.name.value
            if root not in PUBLIC_FIELDS | INTROSPECTION:
                raise NotForwarded(f"{root} is not public chain data; it is not forwarded")
    forwarded = {"query": request["query"], "variables": variables or {}}
    if name is not None:
        forwarded["operationName"] = name
    return json.dumps(forwarded).encode()


LIVE_FIELDS = frozenset({"newBlock"})
"""The subscriptions the local explorer relays: new blocks (public chain data)."""


def public_subscription(query: object, limits: Limits) -> str:
    """``query`` if it is a subscription to :data:`LIVE_FIELDS` only, else a refusal."""
    if not isinstance(query, str) or len(query) > limits.max_body_bytes:
        raise NotForwarded("a subscription's query must be a short string")
    for definition in parse_query(query, limits).definitions:
        if not isinstance(definition, OperationDefinitionNode) or (
            definition.operation is not OperationType.SUBSCRIPTION
        ):
            raise NotForwarded("only subscriptions to new blocks are relayed")
        for selection in definition.selection_set.selections:
            if not isinstance(selection, FieldNode) or selection.name.value not in LIVE_FIELDS:
                raise NotForwarded("only subscriptions to new blocks are relayed")
    return query


def _json_answer(content_type: str, raw: bytes) -> Any:
    """The answer's JSON, or None when it is not declared or not parsed as JSON."""
    try:
        return json.loads(raw) if content_type.startswith("application/json") else None
    except ValueError:
        return None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None  # a 3xx is answered as it is, and refused below as not JSON


class RemoteGateway:
    """The gateway the local explorer reads from: ``url`` is its base (``http://host:4004``)."""

    def __init__(
        self, url: str, token: str | None = None, limits: ForwardLimits | None = None
    ) -> None:
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ExplorerError(
                f"--gateway {url!r}: give the gateway's address, http(s)://host:port"
            )
        self.url = urllib.parse.urlunsplit(
            (parts.scheme, parts.netloc, parts.path.rstrip("/"), "", "")
        )
        self.token = token
        self.limits = limits or ForwardLimits()
        self._opener = urllib.request.build_opener(_NoRedirect)

    def graphql(self, body: bytes) -> tuple[int, Any]:
        """Forward a body :func:`public_request` returned: (status, the answer's JSON)."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        status, content_type, raw = self._send(
            "/graphql", body, headers, self.limits.max_answer_bytes
        )
        answer = _json_answer(content_type, raw)
        if not isinstance(answer, dict) or not ({"data", "errors"} & answer.keys()):
            raise BadGateway(f"answered HTTP {status} ({content_type or 'no type'}), not GraphQL")
        return status, answer

    def object_proof(self, data_id: str) -> tuple[int, Any]:
        """``GET /objects/<data_id>/proof`` with the command's token: (status, JSON answer).
        Refused locally without a token, or for a data id the gateway would refuse."""
        if not self.token:
            raise NotForwarded(
                "object proofs are private: serve this explorer with `pantheon explorer "
                "--token-file FILE` (a token of a user allowed to read the object) to fetch them"
            )
        if not is_id(data_id) or "/" in data_id:
            raise NotForwarded("the data id must be 1 to 128 printable characters, no '/'")
        path = "/objects/" + urllib.parse.quote(data_id, safe="") + "/proof"
        headers = {"Accept": "application/json", "Authorization": f"Bearer {self.token}"}
        status, content_type, raw = self._send(path, None, headers, self.limits.max_answer_bytes)
        answer = _json_answer(content_type, raw)
        if not isinstance(answer, dict):
            raise BadGateway(f"answered HTTP {status} ({content_type or 'no type'}), not JSON")
        return status, answer

    def genesis(self) -> tuple[int, str, bytes]:
        """``GET /genesis.avro``: (status, content type, body), only JSON or Avro bytes."""
        status, _, raw = self._send("/genesis.avro", None, {}, self.limits.max_genesis_bytes)
        if status == 200:
            return status, "application/octet-stream", raw
        try:
            json.loads(raw)
        except ValueError:
            raise BadGateway(f"answered HTTP {status} for its genesis, not JSON") from None
        return status, "application/json", raw

    def probe(self) -> int:
        """The gateway's chain height; an :class:`ExplorerError` if it cannot tell."""
        try:
            status, answer = self.graphql(b'{"query": "{ summary { height } }"}')
        except GatewayError as exc:
            raise ExplorerError(f"the gateway at {self.url} {exc.message}") from None
        summary = (answer.get("data") or {}).get("summary")
        if status == 401:
            raise ExplorerError(
                f"the gateway at {self.url} does not make its chain public (401); give a token "
                "of its institution with --token-file"
            )
        if status != 200 or not isinstance(summary, dict | None):
            errors = "; ".join(str(e.get("message")) for e in answer.get("errors") or [])
            raise ExplorerError(
                f"the gateway at {self.url} refused a chain read: HTTP {status} {errors}"
            )
        return int(summary["height"]) if summary else -1

    def _send(
        self, path: str, body: bytes | None, headers: dict[str, str], limit: int
    ) -> tuple[int, str, bytes]:
        request = urllib.request.Request(self.url + path, data=body, headers=headers)
        deadline = time.monotonic() + self.limits.timeout_s
        try:
            response: HTTPResponse = self._opener.open(request, timeout=self.limits.timeout_s)
        except urllib.error.HTTPError as exc:  # an answer all the same: 4xx, 5xx, 3xx
            # read while ``exc`` lives: its finalizer closes the answer
            return self._read(cast(HTTPResponse, exc.fp), exc.code, limit, deadline)
        except TimeoutError:
            raise GatewayTimeout(f"did not answer within {self.limits.timeout_s:g} s") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BadGateway(f"cannot be reached: {reason}") from None
        return self._read(response, response.status, limit, deadline)

    def _read(
        self, response: HTTPResponse, status: int, limit: int, deadline: float
    ) -> tuple[int, str, bytes]:
        chunks, size = [], 0
        try:
            while chunk := response.read1(64 * 1024):  # what arrived: a trickle ends too
                size += len(chunk)
                if size > limit:
                    raise BadGateway(f"answered more than {limit} bytes")
                if time.monotonic() > deadline:
                    raise GatewayTimeout(f"did not answer within {self.limits.timeout_s:g} s")
                chunks.append(chunk)
        except (TimeoutError, OSError) as exc:
            raise GatewayTimeout(f"answer broke off: {exc}") from None
        finally:
            response.close()
        content_type = response.headers.get("Content-Type", "") or ""
        return status, content_type, b"".join(chunks)
