"""Who besides the owner may read an object, and how a PUT states it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from gateway.auth.permissions import GROUP_PREFIX, Permission
from gateway.auth.tokens import Claims
from gateway.errors import BadInput
from ledger.context import is_id

MAX_POLICY_ENTRIES = 64


@dataclass(frozen=True, slots=True)
class Policy:
    """Who besides the owner may read an object: members of ``groups``, the ``users`` named."""

    groups: tuple[str, ...] = ()
    users: tuple[str, ...] = ()

    def allows(self, claims: Claims, owner: str) -> bool:
        """Owner, a member of an allowed group, an explicitly granted user, or an admin."""
        return (
            claims.sub == owner
            or claims.sub in self.users
            or any(g in self.groups for g in claims.groups)
            or claims.has(Permission.ADMIN.value)
        )

    def subjects(self) -> list[str]:
        """Grant subjects: user ids and ``group:<name>``."""
        return [*self.users, *(GROUP_PREFIX + g for g in self.groups)]

    @classmethod
    def of_subjects(cls, subjects: Sequence[str]) -> Policy:
        groups = sorted(s[len(GROUP_PREFIX) :] for s in subjects if s.startswith(GROUP_PREFIX))
        users = sorted(s for s in subjects if not s.startswith(GROUP_PREFIX))
        return cls(groups=tuple(groups), users=tuple(users))


def _names(values: Any, what: str) -> tuple[str, ...]:
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise BadInput(f"the policy's {what} must be a list of strings", argument=what)
    names = tuple(sorted({v.strip() for v in values if v.strip()}))
    if len(names) > MAX_POLICY_ENTRIES or not all(is_id(n) for n in names):
        raise BadInput(
            f"the policy's {what}: at most {MAX_POLICY_ENTRIES} names of 1 to 128 printable "
            "characters",
            argument=what,
        )
    return names


def parse_policy(request: Request) -> Policy:
    """The policy of a PUT: ``X-Pantheon-Policy`` JSON and/or ``group=`` / ``user=`` params."""
    groups = list(request.query_params.getlist("group"))
    users = list(request.query_params.getlist("user"))
    header = request.headers.get("x-pantheon-policy")
    if header:
        try:
            doc = json.loads(header)
        except json.JSONDecodeError:
            raise BadInput("X-Pantheon-Policy must be JSON", argument="policy") from None
        if not isinstance(doc, dict) or set(doc) - {"groups", "users"}:
            raise BadInput(
                'X-Pantheon-Policy must be {"groups": [...], "users": [...]}', argument="policy"
            )
        groups += _names(doc.get("groups", []), "groups")
        users += _names(doc.get("users", []), "users")
    return Policy(groups=_names(groups, "groups"), users=_names(users, "users"))
