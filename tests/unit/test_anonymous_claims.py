"""Anonymous claims (public chain data, decisions D39) satisfy only ``chain:read``."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway import server
from gateway.authn import anonymous, is_anonymous, require
from gateway.errors import Forbidden, Unauthenticated
from gateway.field_permissions import required_permission


def test_anonymous_claims_read_the_chain_and_nothing_else() -> None:
    claims = anonymous("inst-1")
    assert is_anonymous(claims) and is_anonymous(None)
    require(claims, required_permission("query", "blocks"))
    require(claims, required_permission("subscription", "newBlock"))
    for operation, field in [
        ("query", "me"),
        ("mutation", "createUser"),
        ("mutation", "submitTransaction"),
        ("mutation", "castVote"),
    ]:
        with pytest.raises(Unauthenticated):
            require(claims, required_permission(operation, field))
    with pytest.raises(Unauthenticated):
        require(claims, None)  # "any valid token": never an anonymous caller


def test_no_claims_are_refused_and_real_ones_are_judged_by_permission() -> None:
    with pytest.raises(Unauthenticated):
        require(None, "chain:read")
    real = replace(anonymous("inst-1"), sub="u-1", kid="k1", jti="j", exp=2**40)
    assert not is_anonymous(real)
    require(real, None)
    with pytest.raises(Forbidden):
        require(real, "admin")


REQUIRED = ["--institution", "inst-1", "--dsn", "postgresql:///x", "--bootstrap", "k:9092"]


def test_pantheon_gateway_serves_public_chain_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(server.PRIVATE_CHAIN_ENV, raising=False)
    assert not server.build_parser().parse_args(REQUIRED).private_chain
    assert server.build_parser().parse_args([*REQUIRED, "--private-chain"]).private_chain
    monkeypatch.setenv(server.PRIVATE_CHAIN_ENV, "1")
    assert server.build_parser().parse_args(REQUIRED).private_chain
    monkeypatch.setenv(server.PRIVATE_CHAIN_ENV, "0")
    assert not server.build_parser().parse_args(REQUIRED).private_chain
