"""The pure IAM decider: hierarchy, authorization, validation, idempotence, replay."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from gateway.auth.permissions import Permission
from gateway.iam.commands import (
    BootstrapAdmin,
    ChangeGrant,
    ChangeMembership,
    ChangePassword,
    Command,
    CreateGroup,
    CreateServiceAccount,
    CreateUser,
    DisableUser,
    Event,
    ForgetUser,
    RevokeTokens,
    UpdateProfile,
    decide,
)
from gateway.iam.errors import (
    AlreadyBootstrapped,
    GroupExists,
    InvalidCommand,
    NotAuthorized,
    UnknownGroup,
    UnknownPermissionError,
    UnknownUser,
    UserExists,
)
from gateway.iam.state import IamState, evolve
from schemas.codec import decode, encode

_ids = itertools.count()


def run(state: IamState, command: Command) -> tuple[IamState, list[Event]]:
    events = decide(state, command, now_ms=1000, new_event_id=lambda: f"e{next(_ids)}")
    for event in events:
        # Every decided event is a valid record of its schema and survives the wire.
        name, record = decode(encode(event.schema, event.record))
        state = evolve(state, name, record)
    return state, events


def user(actor: str, uid: str, login: str | None = None) -> CreateUser:
    return CreateUser(
        actor=actor,
        user_id=uid,
        login=login or uid,
        password_hash="enc:v1:x",
        encrypted_profile=b"{}",
        data_key_id="dk",
    )


def grant(actor: str, subject: str, perm: str, granted: bool = True) -> ChangeGrant:
    return ChangeGrant(actor=actor, subject=subject, permission=perm, granted=granted)


@pytest.fixture
def booted() -> IamState:
    state = IamState(institution="acme")
    state, events = run(
        state,
        BootstrapAdmin(
            user_id="root", login="root", password_hash="h", encrypted_profile=b"", data_key_id="d"
        ),
    )
    assert [e.schema for e in events][:2] == ["UserRegistered", "AdminBootstrapped"]
    return state


def test_bootstrap_makes_the_owner_with_every_permission(booted: IamState) -> None:
    owner = booted.principal("root")
    assert owner is not None and owner.owner and booted.bootstrapped
    assert booted.permissions_of("root") == frozenset(Permission)
    with pytest.raises(AlreadyBootstrapped):
        run(
            booted,
            BootstrapAdmin(
                user_id="x", login="x1", password_hash="h", encrypted_profile=b"", data_key_id="d"
            ),
        )


def test_hierarchy_owner_admin_user(booted: IamState) -> None:
    state, _ = run(booted, user("root", "alice"))
    state, _ = run(state, user("root", "bob"))
    # A plain user administers nothing.
    with pytest.raises(NotAuthorized):
        run(state, user("alice", "carol"))
    # Only the owner hands out admin.
    state, _ = run(state, grant("root", "alice", "admin"))
    state, _ = run(state, user("alice", "carol"))
    with pytest.raises(NotAuthorized, match="institution administrator"):
        run(state, grant("alice", "bob", "admin"))
    # An admin manages users but not other admins, and nobody disables the owner.
    state, _ = run(state, DisableUser(actor="alice", user_id="carol", reason="left"))
    state, _ = run(state, grant("root", "bob", "admin"))
    with pytest.raises(NotAuthorized):
        run(state, DisableUser(actor="alice", user_id="bob", reason="coup"))
    with pytest.raises(NotAuthorized):
        run(state, DisableUser(actor="root", user_id="root", reason="oops"))
    with pytest.raises(NotAuthorized):
        run(state, grant("alice", "root", "chain:read", granted=False))
    # A disabled admin administers nothing.
    state, _ = run(state, DisableUser(actor="root", user_id="bob", reason="left"))
    with pytest.raises(NotAuthorized):
        run(state, user("bob", "dave"))


def test_groups_memberships_and_effective_permissions(booted: IamState) -> None:
    state, _ = run(booted, user("root", "alice"))
    state, _ = run(state, CreateGroup(actor="root", group="operators"))
    with pytest.raises(GroupExists):
        run(state, CreateGroup(actor="root", group="operators"))
    state, _ = run(state, grant("root", "group:operators", "chain:write"))
    state, _ = run(state, grant("root", "alice", "chain:read"))
    state, _ = run(
        state, ChangeMembership(actor="root", user_id="alice", group="operators", added=True)
    )
    assert state.permissions_of("alice") == {Permission.CHAIN_READ, Permission.CHAIN_WRITE}
    # Idempotent: a second add or grant decides nothing.
    assert (
        run(state, ChangeMembership(actor="root", user_id="alice", group="operators", added=True))[
            1
        ]
        == []
    )
    assert run(state, grant("root", "alice", "chain:read"))[1] == []
    state, _ = run(
        state, ChangeMembership(actor="root", user_id="alice", group="operators", added=False)
    )
    assert state.permissions_of("alice") == {Permission.CHAIN_READ}
    with pytest.raises(UnknownGroup):
        run(state, ChangeMembership(actor="root", user_id="alice", group="nope", added=True))
    with pytest.raises(UnknownGroup):
        run(state, grant("root", "group:nope", "chain:read"))
    with pytest.raises(UnknownPermissionError):
        run(state, grant("root", "alice", "chain:everything"))
    with pytest.raises(UnknownUser):
        run(state, grant("root", "ghost", "chain:read"))


def test_admin_groups_are_owner_only(booted: IamState) -> None:
    state, _ = run(booted, user("root", "alice"))
    state, _ = run(state, user("root", "bob"))
    state, _ = run(state, grant("root", "alice", "admin"))
    state, _ = run(state, CreateGroup(actor="root", group="admins"))
    state, _ = run(state, grant("root", "group:admins", "admin"))
    with pytest.raises(NotAuthorized):
        run(state, ChangeMembership(actor="alice", user_id="bob", group="admins", added=True))
    state, _ = run(state, ChangeMembership(actor="root", user_id="bob", group="admins", added=True))
    assert Permission.ADMIN in state.permissions_of("bob")


def test_validation_of_names_and_duplicates(booted: IamState) -> None:
    with pytest.raises(InvalidCommand):
        run(booted, user("root", "u1", "ada@example.org"))
    with pytest.raises(InvalidCommand):
        run(booted, CreateGroup(actor="root", group="Bad Name"))
    state, _ = run(booted, user("root", "u1", "ada"))
    with pytest.raises(UserExists):
        run(state, user("root", "u2", "ada"))
    with pytest.raises(UserExists):
        run(
            state,
            CreateServiceAccount(actor="root", account_id="s1", name="ada", credential_hash="h"),
        )


def test_self_service_and_forgetting(booted: IamState) -> None:
    state, _ = run(booted, user("root", "alice"))
    state, _ = run(state, user("root", "bob"))
    _, events = run(state, ChangePassword(actor="alice", user_id="alice", password_hash="new"))
    assert events[0].schema == "UserPasswordChanged"
    run(state, UpdateProfile(actor="alice", user_id="alice", encrypted_profile=b"{}"))
    with pytest.raises(NotAuthorized):
        run(state, ChangePassword(actor="alice", user_id="bob", password_hash="new"))
    run(state, RevokeTokens(actor="alice", user_id="alice", jti="", expires_at_ms=5))
    with pytest.raises(NotAuthorized):
        run(state, RevokeTokens(actor="alice", user_id="bob", jti="", expires_at_ms=5))
    state, events = run(state, ForgetUser(actor="root", user_id="bob", data_key_id="dk"))
    assert events[0].schema == "UserForgotten"
    with pytest.raises(UnknownUser):
        run(state, ChangeMembership(actor="root", user_id="bob", group="x", added=True))
    state, _ = run(state, DisableUser(actor="root", user_id="alice", reason=""))
    with pytest.raises(NotAuthorized):
        run(state, ChangePassword(actor="alice", user_id="alice", password_hash="new"))
    assert run(state, DisableUser(actor="root", user_id="alice", reason=""))[1] == []


def test_service_accounts(booted: IamState) -> None:
    state, events = run(
        booted,
        CreateServiceAccount(actor="root", account_id="s-1", name="ingest", credential_hash="h"),
    )
    assert events[0].key == "s-1"
    state, _ = run(state, grant("root", "s-1", "chain:write"))
    assert state.permissions_of("s-1") == {Permission.CHAIN_WRITE}
    with pytest.raises(InvalidCommand):
        run(state, ChangePassword(actor="root", user_id="s-1", password_hash="h"))
    state, _ = run(state, DisableUser(actor="root", user_id="s-1", reason="rotated"))
    assert not state.principals["s-1"].active


def test_events_carry_envelope_and_actor(booted: IamState) -> None:
    _, events = run(booted, CreateGroup(actor="root", group="ops", description="Operators"))
    record: dict[str, Any] = events[0].record
    assert events[0].key == "group:ops"
    assert (
        record["institution_id"] == "acme" and record["at_ms"] == 1000 and record["actor"] == "root"
    )


def test_evolve_ignores_contradictions(booted: IamState) -> None:
    dup = {"user_id": "other", "login": "root", "password_hash": "", "encrypted_profile": b""}
    assert evolve(booted, "pantheon.UserRegistered", dup) == booted
    orphan = {"user_id": "ghost", "group": "ops", "added": True}
    assert evolve(booted, "GroupMembershipChanged", orphan) == booted
    assert evolve(booted, "SomethingElse", {}) == booted
