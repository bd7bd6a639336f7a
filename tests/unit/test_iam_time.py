"""The append-time rule for IAM events (D56): future heights, stale keys, CreateTime."""

from __future__ import annotations

import pytest

from ledger.iam_time import LOG_APPEND_TIME, ChainClock, KeyState, TimeRefusal, Wait, check_time

KEY, PUB = b"k" * 32, b"p" * 32
S = 1_000


def clock_of(*stamps: int) -> ChainClock:
    clock = ChainClock()
    for height, ts in enumerate(stamps):
        clock.append(height, ts)
    return clock


def always_active(key_id: bytes, height: int) -> tuple[bool, bytes] | None:
    return (True, PUB)


def revoked_from(at: int) -> KeyState:
    def state(key_id: bytes, height: int) -> tuple[bool, bytes] | None:
        return (height < at, PUB)

    return state


def run(
    clock: ChainClock,
    *,
    key_height: int,
    appended: int,
    keys: KeyState = always_active,
    ts_type: int = LOG_APPEND_TIME,
) -> TimeRefusal | Wait | None:
    signer = {"key_id": KEY, "key_height": key_height, "public_key": PUB}
    stamp = {"ts_type": ts_type, "appended_ms": appended}
    return check_time(**signer, **stamp, clock=clock, keys=keys, skew_ms=S)  # type: ignore[arg-type]


def test_height_at_takes_the_last_of_equal_stamps_and_the_running_maximum() -> None:
    clock = clock_of(100, 200, 200, 150, 300)
    assert clock.height_at(99) == -1
    assert clock.height_at(200) == 3  # 150 after 200 counts as 200
    assert clock.height_at(299) == 3
    assert clock.height_at(300) == 4
    assert not clock.final(300) and clock.final(299)
    assert clock_of(100, 300, 150).final(200)  # a later, earlier-stamped block keeps it final


def test_empty_chain_waits_and_never_decides() -> None:
    assert ChainClock().height_at(10**12) == -1
    assert run(ChainClock(), key_height=0, appended=5_000) == Wait(6_000)


def test_far_future_height_waits_then_is_refused_once_the_chain_passes() -> None:
    clock = clock_of(0, 1_000, 5_000)
    assert run(clock, key_height=2**62, appended=5_000) == Wait(6_000)
    clock.append(3, 6_001)
    assert run(clock, key_height=2**62, appended=5_000) is TimeRefusal.FUTURE


def test_key_height_at_exactly_appended_plus_skew_passes() -> None:
    clock = clock_of(0, 1_000, 6_000, 6_001)
    assert run(clock, key_height=2, appended=5_000) is None  # stamp 6000 == a + S
    clock = clock_of(0, 1_000, 6_001)
    assert run(clock, key_height=2, appended=5_000) is TimeRefusal.FUTURE


def test_known_height_within_skew_waits_only_for_appended_minus_skew() -> None:
    assert run(clock_of(0, 1_000), key_height=1, appended=1_500) is None
    assert run(clock_of(0, 1_000), key_height=1, appended=2_500) == Wait(1_500)


def test_revoked_key_is_stale_only_beyond_the_skew() -> None:
    clock = clock_of(0, 1_000, 2_000, 10_000)  # key revoked from height 2
    keys = revoked_from(2)
    assert run(clock, key_height=1, appended=2_999, keys=keys) is None  # h(1999) = 1
    assert run(clock, key_height=1, appended=3_000, keys=keys) is TimeRefusal.STALE_KEY


def test_replaced_public_key_is_stale() -> None:
    def swapped(key_id: bytes, height: int) -> tuple[bool, bytes] | None:
        return (True, PUB if height < 2 else b"q" * 32)

    clock = clock_of(0, 1_000, 2_000, 10_000)
    assert run(clock, key_height=1, appended=5_000, keys=swapped) is TimeRefusal.STALE_KEY


@pytest.mark.parametrize("ts_type", [0, 1])
def test_a_stamp_not_set_at_append_is_refused(ts_type: int) -> None:
    clock = clock_of(0, 1_000, 10_000)
    assert run(clock, key_height=1, appended=1_000, ts_type=ts_type) is TimeRefusal.CREATE_TIME


def test_blocks_must_come_in_order() -> None:
    with pytest.raises(ValueError, match="block 2 after 0"):
        clock_of(0).append(2, 5)
