"""D62's pure parts: when an IAM clock tick is due, and that the tick is a valid transaction
of the institution's IAM SERVICE key under the chain's contracts."""

from __future__ import annotations

import pytest

from gateway.iam.clock_tick import (
    TICK_OPERATION,
    Need,
    SeenStamps,
    need_of,
    tick_args,
    tick_due,
)
from ledger.hashing import sha256
from ledger.iam_time import GENESIS_MS, LOG_APPEND_TIME, ChainClock
from ledger.key_proofs import register_identity_args
from tests.unit.chain_helpers import CHAIN, Driver, consortium, key


@pytest.mark.parametrize(
    ("latest_ms", "claimed_ms", "due"),
    [
        (1_000, 0, True),  # no block after the time asked, no tick sent for it
        (1_000, 1_000, True),  # stamped exactly at the time: not after it
        (1_001, 0, False),  # the chain has a block after it already
        (1_000, 1_001, False),  # a tick was sent for a later event: its block will be
        (5_000, 5_000, False),
    ],
)
def test_a_tick_is_due_only_when_neither_the_chain_nor_a_tick_covers_the_time(
    latest_ms: int, claimed_ms: int, due: bool
) -> None:
    assert tick_due(latest_ms=latest_ms, claimed_ms=claimed_ms, after_ms=1_000) is due


def test_a_tick_is_due_exactly_when_the_readers_wait_though_the_last_stamp_went_back() -> None:
    """The readers decide by the running maximum of the header stamps (D56), so a chain
    whose last block is stamped before an earlier one still has a block after 4,000: no
    tick (the last block's stamp alone would send one the readers do not need)."""
    stamps = [GENESIS_MS, 1_000, 5_000, 3_000]
    clock = ChainClock()
    for height, stamp in enumerate(stamps):
        clock.append(height, stamp)
    seen = SeenStamps()
    assert seen.extend(2, max(stamps[1:3])) == 5_000
    assert seen.extend(3, stamps[3]) == 5_000  # the last block alone does not move it back
    assert seen.extend(3, None) == 5_000 and seen.height == 3
    for after_ms in (999, 2_999, 3_000, 4_000, 4_999, 5_000, 5_001):
        waits = not clock.final(after_ms)
        assert tick_due(latest_ms=seen.latest_ms, claimed_ms=0, after_ms=after_ms) is waits
    assert not tick_due(latest_ms=seen.latest_ms, claimed_ms=0, after_ms=4_000)
    with pytest.raises(ValueError, match="below"):
        seen.extend(2, 9_000)
    seen.forget()
    assert (seen.height, seen.latest_ms) == (0, GENESIS_MS)


def test_the_need_of_delivered_messages_is_their_latest_append_time_minus_s() -> None:
    stamps = [(LOG_APPEND_TIME, 5_000), (LOG_APPEND_TIME, 7_000), (LOG_APPEND_TIME, 6_000)]
    assert need_of(stamps, 1_500) == Need(after_ms=5_500, appended_ms=7_000, index=1)
    # a stamp the writer chose (or none): the readers refuse the message, nothing to move
    assert need_of([*stamps, (1, 9_000)], 1_500) is None
    assert need_of([(0, -1)], 1_500) is None
    assert need_of([], 1_500) is None


def test_the_tick_is_an_accepted_anchor_of_the_iam_service_key() -> None:
    driver = Driver(consortium())
    iam = key("iam")
    register = register_identity_args(
        iam, chain_id=CHAIN, institution_id="inst-0", kind="SERVICE", label="iam"
    )
    assert driver.codes([driver.tx(driver.gov("inst-0"), "RegisterIdentity", register)]) == ["OK"]
    first = tick_args("inst-0", 1_700_000_000_000, sha256(b"event"))
    second = tick_args("inst-0", 1_700_000_300_001, sha256(b"event"))
    other = tick_args("inst-1", 1_700_000_000_000, sha256(b"event"))
    assert first["data_id"] == "iam-clock/inst-0/1700000000000"
    codes = driver.codes([driver.tx(iam, TICK_OPERATION, args) for args in (first, second)])
    assert codes == ["OK", "OK"]
    # a data id is written once chain-wide: it names the institution and the time
    assert driver.codes([driver.tx(iam, TICK_OPERATION, first)]) == ["ALREADY_EXISTS"]
    gov1 = driver.gov("inst-1")
    assert driver.codes([driver.tx(gov1, TICK_OPERATION, other)]) == ["OK"]
