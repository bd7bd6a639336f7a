"""The permission model: a registry of named permissions and how they combine.

Theory of operation
-------------------
* A permission is a ``resource:action`` string (``chain:read``) or the single word ``admin``.
  :class:`Permission` lists the ones Pantheon knows; :data:`DESCRIPTIONS` documents each.
  To add one, add an enum member and its description: the decider, the projection and the
  tokens take it from here, nothing else changes.
* Permissions are granted to a *subject*: a principal (user or service account, by id) or a
  group (``group:<name>``). A principal's **effective permissions** are the union of its
  direct grants and the grants of every group it belongs to. There are no denials and no
  implications: ``admin`` lets a principal administer users, it does not imply ``chain:write``.
* The hierarchy of an institution is: the **institution administrator** (created once by the
  setup credential; cannot be disabled or forgotten; alone may hand out ``admin``), **admins**
  (principals whose effective permissions include ``admin``: they manage users, groups,
  grants and service accounts), and **users** and **service accounts** (what their grants say).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum

GROUP_PREFIX = "group:"


class Permission(StrEnum):
    """Every permission a token can carry."""

    CHAIN_READ = "chain:read"
    CHAIN_WRITE = "chain:write"
    DATA_READ = "data:read"
    DATA_WRITE = "data:write"
    ADMIN = "admin"


DESCRIPTIONS: Mapping[Permission, str] = {
    Permission.CHAIN_READ: "query blocks, transactions, receipts, identities through the gateway",
    Permission.CHAIN_WRITE: "submit transactions signed by the institution's identities",
    Permission.DATA_READ: "read off-chain data objects the data access policy allows",
    Permission.DATA_WRITE: "store off-chain data objects and anchor their hashes on chain",
    Permission.ADMIN: "manage the institution's users, groups, grants and service accounts",
}


class UnknownPermission(ValueError):
    """A string that names no permission of :class:`Permission`."""


def parse_permission(value: str) -> Permission:
    """The permission called ``value``; raises :class:`UnknownPermission` otherwise."""
    try:
        return Permission(value)
    except ValueError:
        raise UnknownPermission(value) from None


def group_subject(group: str) -> str:
    """The grant subject of a group."""
    return f"{GROUP_PREFIX}{group}"


def effective_permissions(
    principal: str,
    groups: Iterable[str],
    grants: Mapping[str, Iterable[str]],
) -> frozenset[Permission]:
    """Union of the grants to ``principal`` and to each of its ``groups``.

    ``grants`` maps a subject (principal id or ``group:<name>``) to permission strings;
    strings that name no known permission (e.g. one removed from the code) are ignored.
    """
    subjects = [principal, *(group_subject(g) for g in groups)]
    known = {p.value for p in Permission}
    return frozenset(
        Permission(value) for s in subjects for value in grants.get(s, ()) if value in known
    )


def sorted_names(perms: Iterable[Permission]) -> list[str]:
    """Permission names in a stable order (for tokens and tables)."""
    return sorted(p.value for p in perms)
