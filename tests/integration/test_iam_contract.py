"""One contract, two implementations: the pure IAM fold (:func:`gateway.iam.state.evolve`)
and its PostgreSQL projection (``projections.iam_handlers.HANDLERS`` read back by
:func:`gateway.iam.store.load_state`) must reach the same state from the same events (D42).

The scenarios live in :class:`IamContract`; each concrete subclass says only how to fold a
list of events (eventsourcing's recorder test cases habit). A change to one side that the
other does not mirror fails here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from functools import reduce
from typing import Any

import psycopg
import pytest

from gateway.iam.state import IamState, evolve
from gateway.iam.store import load_state
from infra.postgres_server import Postgres
from projections.iam import migrate
from projections.iam_handlers import HANDLERS

INST = "inst-1"
Event = tuple[str, dict[str, Any]]


def user(uid: str, login: str) -> Event:
    return (
        "UserRegistered",
        {
            "user_id": uid,
            "login": login,
            "password_hash": "h",
            "encrypted_profile": b"p",
            "data_key_id": "k",
            "actor": "admin",
            "at_ms": 1,
        },
    )


def service(aid: str, name: str) -> Event:
    return (
        "ServiceAccountCreated",
        {
            "account_id": aid,
            "name": name,
            "credential_hash": "c",
            "actor": "admin",
            "at_ms": 1,
        },
    )


def bootstrap(uid: str) -> Event:
    return ("AdminBootstrapped", {"user_id": uid, "at_ms": 2})


def group(name: str) -> Event:
    return ("GroupCreated", {"group": name, "description": "", "actor": "admin", "at_ms": 3})


def member(uid: str, name: str, *, added: bool = True) -> Event:
    return (
        "GroupMembershipChanged",
        {
            "user_id": uid,
            "group": name,
            "added": added,
            "actor": "admin",
            "at_ms": 4,
        },
    )


def grant(subject: str, permission: str, *, granted: bool = True) -> Event:
    name = "PermissionGranted" if granted else "PermissionRevoked"
    return (name, {"subject": subject, "permission": permission, "actor": "admin", "at_ms": 5})


def disable(uid: str) -> Event:
    return ("UserDisabled", {"user_id": uid, "reason": "left", "at_ms": 6})


def forget(uid: str) -> Event:
    return ("UserForgotten", {"user_id": uid, "at_ms": 7})


def snapshot(state: IamState) -> dict[str, Any]:
    """What both sides must agree on (an emptied membership or grant set is no entry)."""
    return {
        "principals": dict(state.principals),
        "logins": dict(state.logins),
        "groups": set(state.groups),
        "members": {k: set(v) for k, v in state.members.items() if v},
        "grants": {k: set(v) for k, v in state.grants.items() if v},
    }


class IamContract(ABC):
    """The scenarios; a subclass supplies :meth:`fold`."""

    @abstractmethod
    def fold(self, events: list[Event]) -> IamState:
        """The state after ``events``, in order, from an empty institution."""

    def test_create_user(self) -> None:
        state = self.fold([user("u-1", "alice"), service("s-1", "robot")])
        alice, robot = state.principal("u-1"), state.principal("s-1")
        assert alice is not None and (alice.kind, alice.login, alice.active) == (
            "user",
            "alice",
            True,
        )
        assert robot is not None and (robot.kind, robot.login) == ("service", "robot")
        assert state.logins == {"alice": "u-1", "robot": "s-1"}

    def test_second_registration_of_a_login_is_ignored(self) -> None:
        state = self.fold([user("u-1", "alice"), user("u-2", "alice"), user("u-1", "bob")])
        assert set(state.principals) == {"u-1"}
        assert state.logins == {"alice": "u-1"}

    def test_only_the_first_bootstrap_makes_an_owner(self) -> None:
        state = self.fold([user("u-1", "a"), user("u-2", "b"), bootstrap("u-1"), bootstrap("u-2")])
        assert [p.id for p in state.principals.values() if p.owner] == ["u-1"]

    def test_group_and_membership(self) -> None:
        state = self.fold(
            [
                user("u-1", "a"),
                group("ops"),
                member("u-1", "ops"),
                member("u-1", "missing"),
                member("u-9", "ops"),
            ]
        )
        assert state.groups == {"ops"}
        assert snapshot(state)["members"] == {"u-1": {"ops"}}
        left = self.fold(
            [
                user("u-1", "a"),
                group("ops"),
                member("u-1", "ops"),
                member("u-1", "ops", added=False),
            ]
        )
        assert snapshot(left)["members"] == {}

    def test_grant_and_revoke(self) -> None:
        state = self.fold(
            [
                user("u-1", "a"),
                group("ops"),
                member("u-1", "ops"),
                grant("group:ops", "data:read"),
                grant("u-1", "chain:read"),
                grant("u-1", "admin"),
                grant("u-1", "admin", granted=False),
            ]
        )
        assert snapshot(state)["grants"] == {"group:ops": {"data:read"}, "u-1": {"chain:read"}}
        assert {str(p) for p in state.permissions_of("u-1")} == {"chain:read", "data:read"}

    def test_disable(self) -> None:
        state = self.fold([user("u-1", "a"), disable("u-1"), disable("u-9")])
        alice = state.principal("u-1")
        assert alice is not None and (alice.disabled, alice.forgotten, alice.active) == (
            True,
            False,
            False,
        )
        assert set(state.principals) == {"u-1"}

    def test_forget(self) -> None:
        state = self.fold([user("u-1", "a"), user("u-2", "b"), forget("u-1"), forget("u-9")])
        alice, bob = state.principal("u-1"), state.principal("u-2")
        assert alice is not None and (alice.disabled, alice.forgotten) == (True, True)
        assert bob is not None and bob.active

    def test_both_sides_agree_on_a_mixed_history(self) -> None:
        events = [
            user("u-1", "a"),
            bootstrap("u-1"),
            user("u-2", "b"),
            service("s-1", "bot"),
            group("ops"),
            group("ops"),
            member("u-2", "ops"),
            grant("ops", "data:write"),
            grant("s-1", "chain:write"),
            disable("u-2"),
            forget("u-2"),
            user("u-3", "b"),
            member("u-2", "ops", added=False),
            grant("ops", "data:write", granted=False),
        ]
        assert snapshot(self.fold(events)) == snapshot(PureFold().fold(events))


class PureFold(IamContract):
    def fold(self, events: list[Event]) -> IamState:
        return reduce(lambda s, e: evolve(s, e[0], e[1]), events, IamState(institution=INST))


class TestPureFold(PureFold):
    """The reference semantics, in memory."""


class TestPostgresProjection(IamContract):
    """The SQL handlers the IAM projection runs, on a real PostgreSQL."""

    @pytest.fixture(autouse=True)
    def _database(self, postgres: Postgres, unique: str) -> Iterator[None]:
        name = f"iamcontract_{unique}"
        postgres.ensure_database(name)
        with psycopg.connect(postgres.dsn(name), autocommit=True) as conn:
            migrate(conn)
            self.conn = conn
            yield

    def fold(self, events: list[Event]) -> IamState:
        conn = self.conn
        conn.execute(
            "TRUNCATE iam_users, iam_service_accounts, iam_groups, iam_memberships, iam_grants"
        )
        with conn.transaction(), conn.cursor() as cur:
            for schema, record in events:
                HANDLERS[f"pantheon.{schema}"](cur, record)
        return load_state(conn, INST)
