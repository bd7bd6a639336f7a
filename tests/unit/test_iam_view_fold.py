"""The IAM view's fold beyond :func:`gateway.iam.state.evolve` (D74): token revocations and
the sealed hashes a login reads, from accepted events alone."""

from __future__ import annotations

from typing import Any

from gateway.iam.state import IamState, evolve
from gateway.iam.view import Fold
from ledger.iam_events import Opened

INST = "inst-1"


def opened(schema: str, key_height: int = 0, /, **record: Any) -> Opened:
    record.setdefault("event_id", f"{schema}-{sorted(record.items())!r}")
    body = {"institution_id": INST, "key_height": key_height, "key_id": b"k", "event": b""}
    return Opened(body=body, signature=b"", schema=f"pantheon.{schema}", record=record)


def user(uid: str, login: str, password: str) -> Opened:
    return opened(
        "UserRegistered",
        user_id=uid,
        login=login,
        password_hash=password,
        encrypted_profile=b"",
        data_key_id="k",
        actor="",
        at_ms=1,
    )


def fold(*items: Opened) -> Fold:
    out = Fold(INST, IamState(institution=INST))
    for item in items:
        out.apply(item)
    return out


def test_the_first_registration_sets_the_hash_and_a_change_replaces_it() -> None:
    f = fold(
        user("u-1", "ada", "sealed-1"),
        user("u-1", "ada-again", "sealed-x"),  # a second registration of the id: ignored
        user("u-2", "ada", "sealed-y"),  # a second registration of the login: ignored
    )
    assert f.secrets.password == {"u-1": "sealed-1"}
    f.apply(opened("UserPasswordChanged", user_id="u-1", password_hash="sealed-2", at_ms=2))
    assert f.secrets.password == {"u-1": "sealed-2"}
    f.apply(opened("UserForgotten", user_id="u-1", actor="root", at_ms=3))
    f.apply(opened("UserPasswordChanged", user_id="u-1", password_hash="sealed-3", at_ms=4))
    assert f.secrets.password == {"u-1": None}  # forgotten: no hash comes back


def test_a_service_credential_is_the_one_its_account_was_created_with() -> None:
    def created(aid: str, name: str, credential: str) -> Opened:
        return opened(
            "ServiceAccountCreated",
            account_id=aid,
            name=name,
            credential_hash=credential,
            actor="root",
            at_ms=1,
        )

    f = fold(created("s-1", "meter", "c-1"), created("s-1", "other", "c-2"))
    assert f.secrets.credential == {"s-1": "c-1"}
    f = fold(user("u-1", "ada", "p"), created("u-1", "svc", "c-3"))  # the id is a user's
    assert f.secrets.credential == {}


def test_revocations_by_token_and_by_time_and_the_mark() -> None:
    f = fold(
        user("u-1", "ada", "p"),
        opened("TokenRevoked", 7, user_id="u-1", jti="j-1", expires_at_ms=50, actor="u-1", at_ms=5),
        opened("TokenRevoked", 3, user_id="u-1", jti="", expires_at_ms=90, actor="r", at_ms=20),
        opened("TokenRevoked", 2, user_id="u-1", jti="", expires_at_ms=90, actor="r", at_ms=10),
    )
    assert f.revoked == {"j-1": 50}
    assert f.not_before_ms == {"u-1": 20}  # never moves back
    assert f.mark == 7 and len(f.seen) == 4


def test_the_published_state_is_the_reference_fold() -> None:
    """:meth:`Fold.publish` equals :func:`evolve` over the same accepted events, including
    the ones evolve ignores (a second login, a member of an unknown group)."""
    history = [
        user("u-1", "ada", "p"),
        opened("AdminBootstrapped", user_id="u-1", at_ms=2),
        user("u-2", "bob", "p"),
        user("u-3", "bob", "p"),  # the login is taken
        opened("AdminBootstrapped", user_id="u-2", at_ms=3),  # not a second owner
        opened(
            "ServiceAccountCreated",
            account_id="s-1",
            name="meter",
            credential_hash="c",
            actor="u-1",
            at_ms=4,
        ),
        opened("GroupCreated", group="ops", actor="u-1", at_ms=5),
        opened("GroupMembershipChanged", user_id="u-2", group="ops", added=True, actor="u-1"),
        opened("GroupMembershipChanged", user_id="u-2", group="nope", added=True, actor="u-1"),
        opened("GroupMembershipChanged", user_id="u-9", group="ops", added=True, actor="u-1"),
        opened("GroupMembershipChanged", user_id="s-1", group="ops", added=True, actor="u-1"),
        opened("GroupMembershipChanged", user_id="s-1", group="ops", added=False, actor="u-1"),
        opened("PermissionGranted", subject="group:ops", permission="chain:write", actor="u-1"),
        opened("PermissionGranted", subject="u-2", permission="chain:read", actor="u-1"),
        opened("PermissionGranted", subject="u-2", permission="data:read", actor="u-1"),
        opened("PermissionRevoked", subject="u-2", permission="chain:read", actor="u-1"),
        opened("UserDisabled", user_id="s-1", actor="u-1", reason="", at_ms=6),
        opened("UserForgotten", user_id="u-2", actor="u-1", data_key_id="", at_ms=7),
    ]
    f = fold(*history)
    f.publish()
    expected = IamState(institution=INST)
    for item in history:
        expected = evolve(expected, item.schema, item.record)
    assert f.state == expected
    assert f.access_of("u-2").perms == {"chain:write", "data:read"}
