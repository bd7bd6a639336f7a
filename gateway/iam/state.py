"""The IAM state a command is decided against, and how each event changes it (pure).

Theory of operation
-------------------
* :class:`IamState` is an immutable snapshot of one institution's principals (users and
  service accounts), groups, memberships and grants. The gateway loads it from the
  projection; unit tests build it by folding events with :func:`evolve`.
* :func:`evolve` is the reference semantics the SQL projection mirrors: it never raises, and
  an event that contradicts the state (a second registration of a login, a member added to
  a group that does not exist) is ignored, so replay is deterministic even if two gateways
  raced and both produced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from gateway.auth.permissions import Permission, effective_permissions

PrincipalKind = Literal["user", "service"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """A user or a service account."""

    id: str
    kind: PrincipalKind
    login: str
    owner: bool = False
    disabled: bool = False
    forgotten: bool = False

    @property
    def active(self) -> bool:
        return not (self.disabled or self.forgotten)


@dataclass(frozen=True, slots=True, kw_only=True)
class IamState:
    """Principals, groups, memberships (principal -> groups) and grants (subject -> perms)."""

    institution: str
    principals: Mapping[str, Principal] = field(default_factory=dict)
    logins: Mapping[str, str] = field(default_factory=dict)
    groups: frozenset[str] = frozenset()
    members: Mapping[str, frozenset[str]] = field(default_factory=dict)
    grants: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @property
    def bootstrapped(self) -> bool:
        return any(p.owner for p in self.principals.values())

    def principal(self, principal_id: str) -> Principal | None:
        return self.principals.get(principal_id)

    def groups_of(self, principal_id: str) -> frozenset[str]:
        return self.members.get(principal_id, frozenset())

    def permissions_of(self, principal_id: str) -> frozenset[Permission]:
        return effective_permissions(principal_id, self.groups_of(principal_id), self.grants)


def _with(mapping: Mapping[str, Any], key: str, value: Any) -> dict[str, Any]:
    out = dict(mapping)
    out[key] = value
    return out


def evolve(state: IamState, schema: str, record: Mapping[str, Any]) -> IamState:
    """The state after one event (``schema`` is the short or full record name)."""
    name = schema.rsplit(".", 1)[-1]
    if name in ("UserRegistered", "ServiceAccountCreated"):
        pid = record["user_id"] if name == "UserRegistered" else record["account_id"]
        login = record["login"] if name == "UserRegistered" else record["name"]
        if pid in state.principals or login in state.logins:
            return state
        kind: PrincipalKind = "user" if name == "UserRegistered" else "service"
        principal = Principal(id=pid, kind=kind, login=login)
        return replace(
            state,
            principals=_with(state.principals, pid, principal),
            logins=_with(state.logins, login, pid),
        )
    if name in ("AdminBootstrapped", "UserDisabled", "UserForgotten"):
        found = state.principals.get(record["user_id"])
        if found is None:
            return state
        if name == "AdminBootstrapped":
            changed = replace(found, owner=not state.bootstrapped or found.owner)
        elif name == "UserDisabled":
            changed = replace(found, disabled=True)
        else:
            changed = replace(found, disabled=True, forgotten=True)
        return replace(state, principals=_with(state.principals, found.id, changed))
    if name == "GroupCreated":
        return replace(state, groups=state.groups | {record["group"]})
    if name == "GroupMembershipChanged":
        pid, group = record["user_id"], record["group"]
        if pid not in state.principals or group not in state.groups:
            return state
        groups = state.groups_of(pid)
        groups = groups | {group} if record["added"] else groups - {group}
        return replace(state, members=_with(state.members, pid, groups))
    if name in ("PermissionGranted", "PermissionRevoked"):
        subject, perm = record["subject"], record["permission"]
        held = state.grants.get(subject, frozenset())
        held = held | {perm} if name == "PermissionGranted" else held - {perm}
        return replace(state, grants=_with(state.grants, subject, held))
    return state
