"""Commands of user management and the pure decider that turns them into events.

Theory of operation
-------------------
* A command is a verb (``CreateUser``), an event is a fact in the past tense
  (``UserRegistered``). :func:`decide` takes the current :class:`~gateway.iam.state.IamState`
  and a command and returns the events to produce, or raises an
  :class:`~gateway.iam.errors.IamError` subclass. It does no I/O: secrets arrive already
  hashed and sealed, ids, clock and event ids are arguments.
* Authorization is part of the decision. ``actor`` is the principal issuing the command:
  - ``admin`` (effective) is needed for every administrative command;
  - only the **institution administrator** (the bootstrapped owner) may grant or revoke
    ``admin``, change membership of a group that holds ``admin``, or act on another admin;
  - the owner can never be disabled or forgotten;
  - a principal may change its own password and profile and revoke its own tokens.
* Commands that would change nothing (granting a held permission, adding a member twice)
  decide no events: every handler is idempotent.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.auth.permissions import (
    GROUP_PREFIX,
    Permission,
    UnknownPermission,
    group_subject,
    parse_permission,
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
from gateway.iam.state import IamState, Principal

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")
"""Logins, service account names and group names: no ``@``, so a login is never an email
address (logins are pseudonyms and stay readable on the topic; personal data go to the
sealed profile)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One event to produce: schema name, message key (the subject) and record."""

    schema: str
    key: str
    record: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class BootstrapAdmin:
    user_id: str
    login: str
    password_hash: str
    encrypted_profile: bytes
    data_key_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateUser:
    actor: str
    user_id: str
    login: str
    password_hash: str
    encrypted_profile: bytes
    data_key_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateServiceAccount:
    actor: str
    account_id: str
    name: str
    credential_hash: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DisableUser:
    actor: str
    user_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ForgetUser:
    actor: str
    user_id: str
    data_key_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangePassword:
    actor: str
    user_id: str
    password_hash: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateProfile:
    actor: str
    user_id: str
    encrypted_profile: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateGroup:
    actor: str
    group: str
    description: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeMembership:
    actor: str
    user_id: str
    group: str
    added: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeGrant:
    """Grant (``granted=True``) or revoke a permission on a principal id or ``group:<name>``."""

    actor: str
    subject: str
    permission: str
    granted: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RevokeTokens:
    """Revoke one token (``jti``) or, with ``jti=""``, every token issued so far to a user."""

    actor: str
    user_id: str
    jti: str
    expires_at_ms: int


Command = (
    BootstrapAdmin
    | CreateUser
    | CreateServiceAccount
    | DisableUser
    | ForgetUser
    | ChangePassword
    | UpdateProfile
    | CreateGroup
    | ChangeMembership
    | ChangeGrant
    | RevokeTokens
)


def _check_name(kind: str, name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise InvalidCommand(f"{kind} {name!r} must match {NAME_RE.pattern}")


def _admin(state: IamState, actor: str) -> Principal:
    principal = state.principal(actor)
    if principal is None or not principal.active:
        raise NotAuthorized(f"{actor!r} is not an active principal")
    if Permission.ADMIN not in state.permissions_of(actor):
        raise NotAuthorized(f"{actor} lacks the admin permission")
    return principal


def _owner(state: IamState, actor: str, what: str) -> None:
    if not _admin(state, actor).owner:
        raise NotAuthorized(f"only the institution administrator may {what}")


def _target(state: IamState, user_id: str) -> Principal:
    principal = state.principal(user_id)
    if principal is None or principal.forgotten:
        raise UnknownUser(user_id)
    return principal


def _self_or_admin(state: IamState, actor: str, target: Principal, what: str) -> None:
    if actor == target.id:
        if not target.active:
            raise NotAuthorized(f"{actor} is disabled")
        return
    _admin(state, actor)
    if Permission.ADMIN in state.permissions_of(target.id) or target.owner:
        _owner(state, actor, f"{what} of another admin")


def _register(state: IamState, user_id: str, login: str) -> None:
    _check_name("login", login)
    if user_id in state.principals or login in state.logins:
        raise UserExists(login)


def decide(  # noqa: PLR0915 - one case per command: reads as a table
    state: IamState, command: Command, *, now_ms: int, new_event_id: Callable[[], str]
) -> list[Event]:
    """The events ``command`` produces against ``state``, or an :class:`IamError`."""
    actor = "" if isinstance(command, BootstrapAdmin) else command.actor
    events: list[Event] = []

    def emit(schema: str, key: str, **fields: Any) -> None:
        record = {
            "event_id": new_event_id(),
            "institution_id": state.institution,
            "at_ms": now_ms,
            **fields,
            "actor": actor,
        }
        events.append(Event(schema, key, record))

    match command:
        case BootstrapAdmin():
            if state.bootstrapped:
                raise AlreadyBootstrapped(state.institution)
            _register(state, command.user_id, command.login)
            _emit_user(emit, command)
            emit("AdminBootstrapped", command.user_id, user_id=command.user_id)
            for perm in Permission:
                emit(
                    "PermissionGranted",
                    command.user_id,
                    subject=command.user_id,
                    permission=perm.value,
                )
        case CreateUser():
            _admin(state, actor)
            _register(state, command.user_id, command.login)
            _emit_user(emit, command)
        case CreateServiceAccount():
            _admin(state, actor)
            _register(state, command.account_id, command.name)
            emit(
                "ServiceAccountCreated",
                command.account_id,
                account_id=command.account_id,
                name=command.name,
                credential_hash=command.credential_hash,
            )
        case DisableUser() | ForgetUser():
            target = _target(state, command.user_id)
            _admin(state, actor)
            if target.owner:
                raise NotAuthorized("the institution administrator cannot be disabled or forgotten")
            if Permission.ADMIN in state.permissions_of(target.id):
                _owner(state, actor, "disable or forget another admin")
            if isinstance(command, DisableUser):
                if not target.disabled:
                    emit("UserDisabled", target.id, user_id=target.id, reason=command.reason)
            else:
                emit("UserForgotten", target.id, user_id=target.id, data_key_id=command.data_key_id)
        case ChangePassword():
            target = _target(state, command.user_id)
            if target.kind != "user":
                raise InvalidCommand("service accounts have no password")
            _self_or_admin(state, actor, target, "change the password")
            emit(
                "UserPasswordChanged",
                target.id,
                user_id=target.id,
                password_hash=command.password_hash,
            )
        case UpdateProfile():
            target = _target(state, command.user_id)
            _self_or_admin(state, actor, target, "update the profile")
            emit(
                "UserProfileUpdated",
                target.id,
                user_id=target.id,
                encrypted_profile=command.encrypted_profile,
            )
        case CreateGroup():
            _admin(state, actor)
            _check_name("group", command.group)
            if command.group in state.groups:
                raise GroupExists(command.group)
            emit(
                "GroupCreated",
                group_subject(command.group),
                group=command.group,
                description=command.description,
            )
        case ChangeMembership():
            target = _target(state, command.user_id)
            _admin(state, actor)
            if command.group not in state.groups:
                raise UnknownGroup(command.group)
            if Permission.ADMIN in state.grants.get(group_subject(command.group), frozenset()):
                _owner(state, actor, "change membership of a group holding admin")
            if (command.group in state.groups_of(target.id)) != command.added:
                emit(
                    "GroupMembershipChanged",
                    target.id,
                    user_id=target.id,
                    group=command.group,
                    added=command.added,
                )
        case ChangeGrant():
            _decide_grant(state, command, emit)
        case RevokeTokens():
            target = _target(state, command.user_id)
            if actor != target.id:
                _admin(state, actor)
            emit(
                "TokenRevoked",
                target.id,
                user_id=target.id,
                jti=command.jti,
                expires_at_ms=command.expires_at_ms,
            )
    return events


def _emit_user(emit: Callable[..., None], command: BootstrapAdmin | CreateUser) -> None:
    emit(
        "UserRegistered",
        command.user_id,
        user_id=command.user_id,
        login=command.login,
        password_hash=command.password_hash,
        encrypted_profile=command.encrypted_profile,
        data_key_id=command.data_key_id,
    )


def _decide_grant(state: IamState, command: ChangeGrant, emit: Callable[..., None]) -> None:
    try:
        perm = parse_permission(command.permission)
    except UnknownPermission:
        raise UnknownPermissionError(command.permission) from None
    _admin(state, command.actor)
    subject = command.subject
    if subject.startswith(GROUP_PREFIX):
        if subject[len(GROUP_PREFIX) :] not in state.groups:
            raise UnknownGroup(subject[len(GROUP_PREFIX) :])
    else:
        target = _target(state, subject)
        if target.owner and not command.granted:
            raise NotAuthorized("the institution administrator's grants cannot be revoked")
    if perm is Permission.ADMIN:
        _owner(state, command.actor, "grant or revoke admin")
    held = perm.value in state.grants.get(subject, frozenset())
    if held != command.granted:
        emit(
            "PermissionGranted" if command.granted else "PermissionRevoked",
            subject,
            subject=subject,
            permission=perm.value,
        )
