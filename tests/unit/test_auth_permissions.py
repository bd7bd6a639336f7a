"""The permission registry and effective permissions."""

from __future__ import annotations

import pytest

from gateway.auth.permissions import (
    DESCRIPTIONS,
    Permission,
    UnknownPermission,
    effective_permissions,
    parse_permission,
    sorted_names,
)


def test_required_permissions_exist_and_are_documented() -> None:
    names = {p.value for p in Permission}
    assert {"chain:read", "chain:write", "data:read", "data:write", "admin"} <= names
    assert set(DESCRIPTIONS) == set(Permission)


def test_parse() -> None:
    assert parse_permission("chain:read") is Permission.CHAIN_READ
    with pytest.raises(UnknownPermission):
        parse_permission("chain:*")


def test_effective_is_the_union_of_direct_and_group_grants() -> None:
    grants = {
        "u-1": ["chain:read"],
        "group:ops": ["chain:write", "data:read"],
        "group:auditors": ["data:read"],
        "group:other": ["admin"],
        "u-2": ["admin"],
    }
    perms = effective_permissions("u-1", ["ops", "auditors"], grants)
    assert sorted_names(perms) == ["chain:read", "chain:write", "data:read"]
    assert effective_permissions("u-3", [], grants) == frozenset()


def test_unknown_stored_permissions_are_ignored() -> None:
    assert effective_permissions("u", [], {"u": ["retired:perm", "admin"]}) == {Permission.ADMIN}
