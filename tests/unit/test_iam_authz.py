"""Authorization replayed from IAM events (``ledger.iam_authz``, D21)."""

from __future__ import annotations

from typing import Any

from ledger.iam_authz import AuthzState, authorize

INST = "alpha"


def ev(schema: str, actor: str, **fields: Any) -> tuple[str, dict[str, Any]]:
    return schema, {"event_id": "e", "institution_id": INST, "at_ms": 1, "actor": actor, **fields}


def user(uid: str, actor: str = "root") -> tuple[str, dict[str, Any]]:
    return ev("UserRegistered", actor, user_id=uid, login=uid, password_hash="", data_key_id="")


def grant(subject: str, perm: str, actor: str = "root") -> tuple[str, dict[str, Any]]:
    return ev("PermissionGranted", actor, subject=subject, permission=perm)


def fold(*events: tuple[str, dict[str, Any]]) -> AuthzState:
    """Events folded only if authorized (what every reader does)."""
    state = AuthzState()
    for schema, record in events:
        if authorize(state, schema, record) is None:
            state.apply(schema, record)
    return state


BOOT = (
    user("root", ""),
    ev("AdminBootstrapped", "", user_id="root"),
    *(grant("root", p, "") for p in ("admin", "chain:read")),
)


def test_the_bootstrap_is_authorized_once() -> None:
    state = fold(*BOOT)
    assert state.owner == "root" and state.holds_admin("root")
    assert authorize(state, *user("late", "")) is not None
    assert authorize(state, *ev("AdminBootstrapped", "", user_id="root")) is not None
    assert authorize(state, *grant("someone", "admin", "")) is not None


def test_only_admins_administer_and_only_the_owner_hands_out_admin() -> None:
    state = fold(*BOOT, user("ann"), user("bob"), grant("ann", "admin"))
    assert authorize(state, *user("eve", "bob")) is not None  # bob is no admin
    assert authorize(state, *grant("bob", "chain:read", "bob")) is not None
    assert authorize(state, *user("eve", "ann")) is None  # ann is an admin
    assert authorize(state, *grant("bob", "chain:read", "ann")) is None
    assert authorize(state, *grant("bob", "admin", "ann")) is not None  # owner only
    assert authorize(state, *grant("bob", "admin")) is None
    disable_ann = ev("UserDisabled", "ann", user_id="ann", reason="")
    assert authorize(state, *disable_ann) is not None  # another admin: owner only
    assert authorize(state, *ev("UserDisabled", "ann", user_id="root", reason="")) is not None
    assert authorize(state, *ev("PermissionRevoked", "root", subject="root", permission="admin"))


def test_self_service_and_disabled_actors() -> None:
    state = fold(*BOOT, user("bob"), user("cid"), ev("UserDisabled", "root", user_id="cid"))
    own = ev("UserPasswordChanged", "bob", user_id="bob", password_hash="x")
    assert authorize(state, *own) is None
    assert authorize(state, *ev("UserPasswordChanged", "bob", user_id="cid")) is not None
    assert authorize(state, *ev("UserPasswordChanged", "cid", user_id="cid")) is not None
    tokens = ev("TokenRevoked", "bob", user_id="bob", jti="", expires_at_ms=1)
    assert authorize(state, *tokens) is None
    assert authorize(state, *ev("TokenRevoked", "bob", user_id="root", jti="")) is not None


def test_an_escalation_written_in_tables_is_not_believed_from_events() -> None:
    state = fold(*BOOT, user("bob"), user("mal", "bob"), grant("mal", "admin", "bob"))
    assert "mal" not in state.principals and not state.holds_admin("mal")
