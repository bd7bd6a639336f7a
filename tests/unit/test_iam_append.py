"""The append-time bound wired into the IAM rule every reader runs (D56, `decide_appended`
through `IamGate`, the audit's and the bench's gate; the live projection calls the same
function)."""

from __future__ import annotations

from typing import Any

import pytest

from ledger import iam_time
from ledger.iam_authz import AuthzState, PrincipalFlags
from ledger.iam_events import IamGate, KeyHistory, Opened, Refusal, sign_event
from ledger.iam_time import LOG_APPEND_TIME, ChainClock, Wait
from ledger.keys import KeyPair
from schemas.codec import encode

INST = "alpha"
KEY = KeyPair.from_seed(bytes(range(32)))
STRANGER = KeyPair.from_seed(bytes(range(2, 34)))
S = 1_000
BLOCK_MS = 10_000  # block h is stamped h * BLOCK_MS
APPENDED = (LOG_APPEND_TIME, 5 * BLOCK_MS)  # between blocks 5 and 6 (more than S from each)


@pytest.fixture(autouse=True)
def small_skew(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(iam_time, "SKEW_MS", S)  # what every reader reads when it decides


def grant(event_id: str) -> bytes:
    record = {
        "event_id": event_id,
        "institution_id": INST,
        "at_ms": 1,
        "subject": "u-1",
        "permission": "admin",
        "actor": "u-0",
    }
    return encode("PermissionGranted", record)


def chain(blocks: int) -> ChainClock:
    clock = ChainClock()
    for height in range(blocks + 1):
        clock.append(height, height * BLOCK_MS)
    return clock


def gate(clock: ChainClock, *rows: tuple[Any, ...]) -> IamGate:
    keys = KeyHistory.from_rows(rows or [(KEY.key_id, 1, INST, "SERVICE", True, KEY.public_key)])
    owner = AuthzState(principals={"u-0": PrincipalFlags(owner=True)}, grants={"u-0": {"admin"}})
    return IamGate(INST, keys.at, clock=clock, authz=owner)


def test_a_message_not_stamped_by_the_broker_is_refused() -> None:
    event = sign_event(KEY, INST, 1, grant("e-1"))
    assert gate(chain(9)).admit(event, (1, APPENDED[1])) is Refusal.CREATE_TIME  # CreateTime
    assert gate(chain(9)).admit(event) is Refusal.CREATE_TIME  # not available
    assert isinstance(gate(chain(9)).admit(event, APPENDED), Opened)
    unbounded = gate(chain(9))
    unbounded.clock = None  # the bench's gate: no chain, no bound
    assert isinstance(unbounded.admit(event), Opened)


def test_a_far_future_height_waits_then_is_refused_and_the_topic_goes_on() -> None:
    clock = chain(5)
    g = gate(clock)
    attack = sign_event(STRANGER, INST, 2**62, grant("e-x"))
    assert g.admit(attack, APPENDED) == Wait(APPENDED[1] + S)  # the chain may still get there
    clock.append(6, 6 * BLOCK_MS)  # a block stamped after appended + S: decided for ever
    assert g.admit(attack, APPENDED) is Refusal.FUTURE
    later = (LOG_APPEND_TIME, APPENDED[1] + 1)
    assert isinstance(g.admit(sign_event(KEY, INST, 5, grant("e-2")), later), Opened)
    # a height certified after appended + S is future too, however soon it comes
    assert g.admit(sign_event(KEY, INST, 6, grant("e-3")), APPENDED) is Refusal.FUTURE


def test_a_revoked_key_cannot_backdate_past_the_skew_without_a_later_iam_change() -> None:
    rows = (
        (KEY.key_id, 1, INST, "SERVICE", True, KEY.public_key),
        (KEY.key_id, 4, INST, "SERVICE", False, KEY.public_key),  # revoked in block 4
    )
    backdated = sign_event(KEY, INST, 3, grant("e-1"))  # active at 3; the mark stays 0
    assert gate(chain(5), *rows).admit(backdated, APPENDED) is Refusal.STALE_KEY
    just_after = (LOG_APPEND_TIME, 4 * BLOCK_MS + S - 1)  # h(a - S) = 3: still active
    assert isinstance(gate(chain(5), *rows).admit(backdated, just_after), Opened)
    assert gate(chain(4), *rows).admit(backdated, APPENDED) == Wait(APPENDED[1] - S)


def test_a_replaced_public_key_is_stale_and_other_refusals_keep_their_reason() -> None:
    other = KeyPair.from_seed(bytes(range(3, 35))).public_key
    rows = (
        (KEY.key_id, 1, INST, "SERVICE", True, KEY.public_key),
        (KEY.key_id, 4, INST, "SERVICE", True, other),
    )
    event = sign_event(KEY, INST, 3, grant("e-1"))
    assert gate(chain(5), *rows).admit(event, APPENDED) is Refusal.STALE_KEY
    # an unknown key within the time bound is refused as before, without a wait
    unknown = sign_event(STRANGER, INST, 3, grant("e-2"))
    assert gate(chain(4)).admit(unknown, APPENDED) is Refusal.UNKNOWN_KEY
