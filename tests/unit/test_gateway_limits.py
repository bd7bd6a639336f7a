"""Pure checks of the hostile-query limits and of the token cache (no database)."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest
from graphql.utilities import get_operation_ast

from gateway.auth.tokens import (
    Claims,
    ExpiredToken,
    KeyRing,
    SigningKey,
    TokenIssuer,
    TokenVerifier,
)
from gateway.authn import CachingAuthenticator, authenticate, bearer_token, require
from gateway.context import Services
from gateway.engine import Engine
from gateway.errors import (
    Forbidden,
    PageTooLarge,
    ParseFailed,
    QueryTooCostly,
    QueryTooDeep,
    TooManyAliases,
    Unauthenticated,
)
from gateway.limits import Limits, check_document, parse_query
from gateway.schema import SCHEMA

LIMITS = Limits()


def cost(query: str, limits: Limits = LIMITS, **variables: Any) -> int:
    doc = parse_query(query, limits)
    op = get_operation_ast(doc)
    assert op is not None
    return check_document(SCHEMA.graphql_schema, doc, op, variables, limits)


def test_cost_is_list_sizes_times_nesting() -> None:
    assert cost("{ summary { height } }") == 2
    # blocks (1) + edges (10) + node (10) + height, hash (2 x 10)
    assert cost("{ blocks(first: 10) { edges { node { height hash } } } }") == 41
    # default page size of blocks is 20
    assert cost("{ blocks { edges { node { height } } } }") == 61
    # a plain list multiplies by the default list size
    assert cost("{ institutions { id operators { keyId } } }") == 1 + 20 + 20 + 400


def test_limits_raise_typed_errors() -> None:
    with pytest.raises(PageTooLarge):
        cost("query($n: Int) { blocks(first: $n) { edges { cursor } } }", n=500)
    with pytest.raises(QueryTooCostly):
        cost(
            "{ blocks(first: 100) { edges { node { transactions(first: 100) { "
            "edges { node { txId } } } } } } }"
        )
    with pytest.raises(QueryTooDeep):
        cost(
            '{ transaction(id: "00") { block { transactions(first: 1) { edges { node { '
            "block { transactions(first: 1) { edges { node { block { height } } } } } } } } } } }"
        )
    with pytest.raises(TooManyAliases):
        cost("{ " + " ".join(f"a{i}: summary {{ height }}" for i in range(31)) + " }")
    with pytest.raises(ParseFailed):
        cost("{ summary { height }")
    with pytest.raises(ParseFailed):
        cost("{" + "summary{height}" * 2000 + "}")
    with pytest.raises((QueryTooDeep, ParseFailed)):
        cost("{ summary " + "{ height " * 5000 + "}" * 5001, Limits(max_tokens=100_000))


def test_page_size_holes_in_variables_are_closed() -> None:
    query = "query($n: Int) { blocks(first: $n) { edges { cursor } } }"
    # an integral float is coerced to an Int by GraphQL: it must be checked as one
    for value in (101.0, 1e9, float("inf"), float("nan")):
        with pytest.raises(PageTooLarge):
            cost(query, n=value)
    assert cost(query, n=10.0) == cost(query, n=10) == 1 + 10 + 10
    # a variable's default is the page size when the variable is not sent
    with pytest.raises(PageTooLarge):
        cost("query($n: Int = 100000) { blocks(first: $n) { edges { cursor } } }")
    assert cost("query($n: Int = 7) { blocks(first: $n) { edges { cursor } } }") == 1 + 7 + 7
    assert cost("query($n: Int = 100000) { blocks(first: $n) { edges { cursor } } }", n=5) == 11


def test_introspection_is_exempt_and_fragment_cycles_stop() -> None:
    assert (
        cost("{ __schema { types { name fields { name type { ofType { ofType { name } } } } } } }")
        == 0
    )
    assert (
        cost("{ blocks(first: 1) { edges { node { ...A } } } } fragment A on Block { height ...A }")
        == 4
    )


def _verifier() -> tuple[TokenIssuer, TokenVerifier]:
    ring = KeyRing(SigningKey.generate(int(time.time())))
    kw: dict[str, Any] = {"issuer": "i", "audience": "a", "clock": time.time}
    return TokenIssuer(ring, ttl_s=60, **kw), TokenVerifier(ring, **kw)


def test_caching_authenticator_reuses_only_successes() -> None:
    issuer, verifier = _verifier()
    calls: list[str] = []

    class Counting:
        def verify(self, token: str) -> Any:
            calls.append(token)
            return verifier.verify(token)

    now = [time.time()]
    cache = CachingAuthenticator(Counting(), ttl_s=1.0, clock=lambda: now[0])
    token = issuer.issue(sub="u", inst="x", groups=[], perms=["chain:read"]).value
    assert cache.verify(token).sub == "u" and cache.verify(token).sub == "u"
    assert len(calls) == 1
    now[0] += 1.5
    cache.verify(token)
    assert len(calls) == 2
    with pytest.raises(Unauthenticated) as refused:
        authenticate(cache, token + "x", "x")
    assert refused.value.extra["reason"] in ("bad_signature", "malformed")
    with pytest.raises(Unauthenticated) as wrong:
        authenticate(cache, token, "other")
    assert wrong.value.extra["reason"] == "wrong_institution"
    assert isinstance(ExpiredToken(), Exception)


def test_bearer_and_require() -> None:
    assert bearer_token(None) is None and bearer_token("Bearer abc") == "abc"
    with pytest.raises(Unauthenticated):
        bearer_token("Token abc")
    with pytest.raises(Unauthenticated):
        require(None, "chain:read")
    issuer, verifier = _verifier()
    claims = verifier.verify(issuer.issue(sub="u", inst="x", groups=[], perms=[]).value)
    with pytest.raises(Forbidden):
        require(claims, "chain:read")
    require(claims, None)


def _claims(*perms: str) -> Claims:
    return Claims(
        iss="i",
        aud="a",
        sub="u",
        inst="inst-1",
        groups=(),
        perms=frozenset(perms),
        iat=0,
        nbf=0,
        exp=2**40,
        jti="j",
        kid="k",
    )


def test_cached_documents_still_check_limits_and_permissions_per_request() -> None:
    engine = Engine(Services(institution="inst-1", pool=cast(Any, None)), LIMITS)
    query = "query($n: Int) { blocks(first: $n) { edges { node { height } } } }"
    reader = _claims("chain:read")
    assert engine.prepare(query, {"n": 5}, None, reader).cost == 1 + 5 + 5 + 5
    for hostile in (500, 500.0, 1e12):  # the same text, with a page size too large
        with pytest.raises(PageTooLarge):
            engine.prepare(query, {"n": hostile}, None, reader)
    assert engine.prepare(query, {"n": 7}, None, reader).cost == 1 + 7 + 7 + 7
    assert engine.prepare(query, {"n": 5}, None, reader).plan is not None
    with pytest.raises(Forbidden):  # the document is cached; the caller is checked again
        engine.prepare(query, {"n": 5}, None, _claims("chain:write"))
    with pytest.raises(Unauthenticated):
        engine.prepare(query, {"n": 5}, None, None)
    with pytest.raises(QueryTooDeep):
        for _ in range(2):  # refused again when the document comes from the cache
            engine.prepare(
                '{ transaction(id: "00") { block { transactions(first: 1) { edges { node { '
                "block { transactions(first: 1) { edges { node { block { height } } } } } } } } "
                "} } }",
                {},
                None,
                reader,
            )
    fragment = "{ ...F } fragment F on Query { summary { height } }"
    assert engine.prepare(fragment, {}, None, reader).plan is None  # runs on graphene
