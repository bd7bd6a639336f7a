"""The pure rules of signed IAM events (``ledger.iam_events``, D21)."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.iam_authz import AuthzState, PrincipalFlags
from ledger.iam_events import (
    IamGate,
    KeyHistory,
    Opened,
    Refusal,
    key_activity,
    open_message,
    sign_event,
)
from ledger.iam_time import Wait
from ledger.keys import KeyPair
from ledger.state import WriteSet
from schemas.codec import decode, encode

INST = "alpha"
KEY = KeyPair.from_seed(bytes(range(32)))
OTHER = KeyPair.from_seed(bytes(range(1, 33)))


def grant(event_id: str = "e-1", institution: str = INST) -> bytes:
    return encode(
        "PermissionGranted",
        {
            "event_id": event_id,
            "institution_id": institution,
            "at_ms": 1,
            "subject": "u-1",
            "permission": "admin",
            "actor": "u-0",
        },
    )


def history(*rows: tuple[Any, ...]) -> KeyHistory:
    return KeyHistory.from_rows(rows)


ACTIVE = history((KEY.key_id, 5, INST, "SERVICE", True, KEY.public_key))


def owner_state() -> AuthzState:
    """``u-0`` is the institution's owner (an admin): the signature rules are under test."""
    return AuthzState(
        principals={"u-0": PrincipalFlags(owner=True)}, logins={"root"}, grants={"u-0": {"admin"}}
    )


def admit(raw: bytes, keys: KeyHistory = ACTIVE, mark: int = 0) -> Opened | Refusal | Wait:
    return IamGate(INST, keys.at, mark=mark, authz=owner_state()).admit(raw)


def resign(raw: bytes, **changes: Any) -> bytes:
    """``raw`` with body fields changed but the original signature kept."""
    _, outer = decode(raw)
    return encode("SignedIamEvent", {**outer, "body": {**outer["body"], **changes}})


def test_a_genuine_event_is_accepted() -> None:
    opened = admit(sign_event(KEY, INST, 7, grant()))
    assert isinstance(opened, Opened)
    assert opened.schema == "pantheon.PermissionGranted" and opened.record["subject"] == "u-1"
    assert opened.key_id == KEY.key_id and opened.key_height == 7


def test_structure_is_refused_before_any_key_is_asked() -> None:
    assert open_message(grant(), INST) is Refusal.UNSIGNED  # the old, unsigned format
    assert open_message(b"\xc3\x01garbage!", INST) is Refusal.UNDECODABLE
    signed = sign_event(KEY, INST, 7, grant())
    assert open_message(signed + b"\x00", INST) is Refusal.UNDECODABLE  # trailing bytes
    assert open_message(signed, "beta") is Refusal.WRONG_INSTITUTION  # copied to beta's topic
    inner_foreign = sign_event(KEY, INST, 7, grant(institution="beta"))
    assert open_message(inner_foreign, INST) is Refusal.WRONG_INSTITUTION
    assert open_message(sign_event(KEY, INST, 7, b"not an event"), INST) is Refusal.BAD_EVENT
    nested = sign_event(KEY, INST, 7, signed)
    assert open_message(nested, INST) is Refusal.BAD_EVENT


def test_any_change_to_what_was_signed_breaks_the_signature() -> None:
    signed = sign_event(KEY, INST, 7, grant())
    assert admit(resign(signed, key_height=8)) is Refusal.BAD_SIGNATURE  # wrong key_height
    assert admit(resign(signed, event=grant("e-2"))) is Refusal.BAD_SIGNATURE
    at = signed.index(b"admin")
    flipped = signed[:at] + bytes([signed[at] ^ 1]) + signed[at + 1 :]  # 'admin' -> '`dmin'
    assert admit(flipped) is Refusal.BAD_SIGNATURE
    last = len(signed) - 1  # a bit of the signature itself
    assert admit(signed[:last] + bytes([signed[last] ^ 0x80])) is Refusal.BAD_SIGNATURE
    wrong_inst = sign_event(KEY, "beta", 7, grant())
    assert admit(resign(wrong_inst, institution_id=INST)) is Refusal.BAD_SIGNATURE


def test_who_may_sign() -> None:
    event = grant()
    assert admit(sign_event(OTHER, INST, 7, event)) is Refusal.UNKNOWN_KEY
    assert admit(sign_event(KEY, INST, 4, event)) is Refusal.UNKNOWN_KEY  # before registration
    foreign = history((KEY.key_id, 5, "beta", "SERVICE", True, KEY.public_key))
    assert admit(sign_event(KEY, INST, 7, event), foreign) is Refusal.FOREIGN_KEY
    device = history((KEY.key_id, 5, INST, "DEVICE", True, KEY.public_key))
    assert admit(sign_event(KEY, INST, 7, event), device) is Refusal.NOT_SERVICE
    revoked = history(
        (KEY.key_id, 5, INST, "SERVICE", True, KEY.public_key),
        (KEY.key_id, 9, INST, "SERVICE", False, KEY.public_key),
    )
    assert admit(sign_event(KEY, INST, 9, event), revoked) is Refusal.REVOKED_KEY
    assert isinstance(admit(sign_event(KEY, INST, 8, event), revoked), Opened)
    # Backdating stops once the topic's mark passed the revoke.
    assert admit(sign_event(KEY, INST, 8, event), revoked, mark=9) is Refusal.STALE_KEY


def test_replays_are_refused_and_the_mark_only_grows() -> None:
    gate = IamGate(INST, ACTIVE.at, authz=owner_state())
    first = sign_event(KEY, INST, 9, grant("e-1"))
    assert isinstance(gate.admit(first), Opened) and gate.mark == 9
    assert gate.admit(first) is Refusal.REPLAYED
    assert gate.admit(sign_event(KEY, INST, 6, grant("e-1"))) is Refusal.REPLAYED  # same id
    assert isinstance(gate.admit(sign_event(KEY, INST, 6, grant("e-2"))), Opened)
    assert gate.mark == 9 and gate.seen == {"e-1", "e-2"}


def _key_record(active: bool, nonce: int = 0, role: str = "SERVICE") -> dict[str, Any]:
    return {
        "key_id": KEY.key_id,
        "public_key": KEY.public_key,
        "role": role,
        "institution_id": INST,
        "label": "iam",
        "active": active,
        "next_nonce": nonce,
    }


def test_key_activity_rows_are_changes_only() -> None:
    key = f"key/{KEY.key_id.hex()}"
    registered = WriteSet(entries=((key, _key_record(True)),))
    rows = key_activity(registered, 3, lambda _k: None)
    assert rows == [(KEY.key_id, 3, INST, "SERVICE", True, KEY.public_key)]
    nonce_moved = WriteSet(entries=((key, _key_record(True, nonce=4)),))
    assert key_activity(nonce_moved, 4, lambda _k: _key_record(True)) == []
    revoked = WriteSet(entries=((key, _key_record(False, nonce=4)),))
    assert key_activity(revoked, 6, lambda _k: _key_record(True, nonce=4)) == [
        (KEY.key_id, 6, INST, "SERVICE", False, KEY.public_key)
    ]
    keys = KeyHistory.from_rows([*rows, (KEY.key_id, 6, INST, "SERVICE", False, KEY.public_key)])
    assert keys.at(KEY.key_id, 2) is None
    at5, at6 = keys.at(KEY.key_id, 5), keys.at(KEY.key_id, 6)
    assert at5 is not None and at5.active
    assert at6 is not None and not at6.active
    with pytest.raises(ValueError, match="out of order"):
        keys.add((KEY.key_id, 6, INST, "SERVICE", True, KEY.public_key))
