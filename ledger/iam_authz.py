"""Whether an IAM event's ``actor`` was allowed to act: authorization replayed from events (D21).

Theory of operation
-------------------
* A signature (:mod:`ledger.iam_events`) says *the gateway* wrote an event; it does not say
  the gateway decided it against the truth. The gateway decides commands against the IAM
  tables in PostgreSQL, so whoever can write those tables could make it sign an escalation.
  :func:`authorize` therefore re-checks every signed event against an :class:`AuthzState`
  folded (:meth:`AuthzState.apply`) from the events accepted before it, with the rules of
  :func:`gateway.iam.commands.decide`:

  - ``actor`` is empty only for the bootstrap: ``UserRegistered`` and ``AdminBootstrapped``
    while the institution has no owner, then ``PermissionGranted`` to that owner;
  - creating users, service accounts and groups, membership and grant changes, disabling,
    forgetting and revoking someone else's tokens need an active principal holding
    ``admin`` (directly or through a group);
  - only the owner (the bootstrapped institution administrator) grants or revokes ``admin``,
    changes membership of a group holding ``admin``, or disables, forgets, changes the
    password or profile of another admin; the owner is never disabled or forgotten and its
    grants are never revoked;
  - a principal changes its own password and profile while active, and revokes its own
    tokens.

* Pure and over plain records, so the live projection (against the state its tables hold),
  a rebuild and the audit (both from the events alone) apply the same rule. The fold mirrors
  the projection's SQL handlers (:mod:`projections.iam`): contradictory events are ignored.
* Events this rule does not know (the stored objects' events, D23) are not judged here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ADMIN = "admin"
GROUP_PREFIX = "group:"


@dataclass(slots=True)
class PrincipalFlags:
    """What authorization needs to know of a user or service account."""

    owner: bool = False
    disabled: bool = False
    forgotten: bool = False

    @property
    def active(self) -> bool:
        return not (self.disabled or self.forgotten)


@dataclass(slots=True)
class AuthzState:
    """Principals (id -> flags), logins, groups, memberships and grants of one institution."""

    principals: dict[str, PrincipalFlags] = field(default_factory=dict)
    logins: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    members: dict[str, set[str]] = field(default_factory=dict)
    grants: dict[str, set[str]] = field(default_factory=dict)

    @property
    def owner(self) -> str | None:
        return next((pid for pid, p in self.principals.items() if p.owner), None)

    def holds_admin(self, pid: str) -> bool:
        """``admin`` among the principal's direct or group grants (active or not)."""
        subjects = [pid, *(GROUP_PREFIX + g for g in self.members.get(pid, ()))]
        return any(ADMIN in self.grants.get(s, ()) for s in subjects)

    def apply(self, schema: str, record: Mapping[str, Any]) -> None:
        """Fold one accepted event (mirrors the projection's SQL handlers)."""
        name = schema.rsplit(".", 1)[-1]
        if name in ("UserRegistered", "ServiceAccountCreated"):
            user = name == "UserRegistered"
            pid = str(record["user_id"] if user else record["account_id"])
            login = str(record["login"] if user else record["name"])
            if pid not in self.principals and login not in self.logins:
                self.principals[pid] = PrincipalFlags()
                self.logins.add(login)
        elif name in ("AdminBootstrapped", "UserDisabled", "UserForgotten"):
            found = self.principals.get(str(record["user_id"]))
            if found is None:
                return
            if name == "AdminBootstrapped":
                found.owner = found.owner or self.owner is None
            else:
                found.disabled = True
                found.forgotten = found.forgotten or name == "UserForgotten"
        elif name == "GroupCreated":
            self.groups.add(str(record["group"]))
        elif name == "GroupMembershipChanged":
            pid, group = str(record["user_id"]), str(record["group"])
            if not record["added"]:
                self.members.get(pid, set()).discard(group)
            elif pid in self.principals and group in self.groups:
                self.members.setdefault(pid, set()).add(group)
        elif name in ("PermissionGranted", "PermissionRevoked"):
            held = self.grants.setdefault(str(record["subject"]), set())
            if name == "PermissionGranted":
                held.add(str(record["permission"]))
            else:
                held.discard(str(record["permission"]))


def _admin(state: AuthzState, actor: str) -> str | None:
    principal = state.principals.get(actor)
    if principal is None or not principal.active:
        return f"{actor!r} is not an active principal"
    if not state.holds_admin(actor):
        return f"{actor} lacks the admin permission"
    return None


def _owner(state: AuthzState, actor: str, what: str) -> str | None:
    refused = _admin(state, actor)
    if refused is None and not state.principals[actor].owner:
        refused = f"only the institution administrator may {what}"
    return refused


def _bootstrap(state: AuthzState, name: str, record: Mapping[str, Any]) -> str | None:
    owner = state.owner
    if name in ("UserRegistered", "AdminBootstrapped") and owner is None:
        return None
    if name == "PermissionGranted" and owner is not None and record["subject"] == owner:
        return None
    return f"{name} without an actor outside the bootstrap"


def authorize(state: AuthzState, schema: str, record: Mapping[str, Any]) -> str | None:
    """Why ``record``'s actor could not have written it against ``state`` (None: it could)."""
    name = schema.rsplit(".", 1)[-1]
    actor = str(record.get("actor") or "")
    if name not in _KNOWN:
        return None
    if actor == "":
        return _bootstrap(state, name, record)
    if name == "AdminBootstrapped":
        return "AdminBootstrapped with an actor"
    if name in ("UserRegistered", "ServiceAccountCreated", "GroupCreated"):
        return _admin(state, actor)
    if name in ("UserDisabled", "UserForgotten"):
        target_id = str(record["user_id"])
        target = state.principals.get(target_id)
        if target is not None and target.owner:
            return "the institution administrator cannot be disabled or forgotten"
        if state.holds_admin(target_id):
            return _owner(state, actor, "disable or forget another admin")
        return _admin(state, actor)
    if name in ("UserPasswordChanged", "UserProfileUpdated"):
        target_id = str(record["user_id"])
        target = state.principals.get(target_id)
        if actor == target_id:
            return None if target is not None and target.active else f"{actor} is not active"
        if state.holds_admin(target_id) or (target is not None and target.owner):
            return _owner(state, actor, "change another admin")
        return _admin(state, actor)
    if name == "GroupMembershipChanged":
        if ADMIN in state.grants.get(GROUP_PREFIX + str(record["group"]), ()):
            return _owner(state, actor, "change membership of a group holding admin")
        return _admin(state, actor)
    if name in ("PermissionGranted", "PermissionRevoked"):
        if name == "PermissionRevoked" and record["subject"] == state.owner:
            return "the institution administrator's grants cannot be revoked"
        if record["permission"] == ADMIN:
            return _owner(state, actor, "grant or revoke admin")
        return _admin(state, actor)
    # TokenRevoked
    return None if actor == record["user_id"] else _admin(state, actor)


_KNOWN = frozenset(
    {
        "UserRegistered",
        "ServiceAccountCreated",
        "AdminBootstrapped",
        "UserDisabled",
        "UserForgotten",
        "UserPasswordChanged",
        "UserProfileUpdated",
        "GroupCreated",
        "GroupMembershipChanged",
        "PermissionGranted",
        "PermissionRevoked",
        "TokenRevoked",
    }
)
