"""Login throttling: exponential backoff per login and per source."""

from __future__ import annotations

import pytest

from gateway.auth.throttle import LoginThrottle, Throttled, ThrottlePolicy


def test_backoff_doubles_after_the_free_failures() -> None:
    throttle = LoginThrottle(ThrottlePolicy(free_failures=3, base_delay_s=1.0))
    now = 100.0
    for _ in range(3):
        throttle.check("ada", "10.0.0.1", now)
        throttle.failure("ada", "10.0.0.1", now)
    throttle.check("ada", "10.0.0.1", now)  # three failures are free
    throttle.failure("ada", "10.0.0.1", now)
    with pytest.raises(Throttled) as err:
        throttle.check("ada", "10.0.0.9", now)  # per login, from any source
    assert err.value.retry_after == pytest.approx(1.0)
    throttle.check("ada", "10.0.0.1", now + 1.0)
    throttle.failure("ada", "10.0.0.1", now + 1.0)
    with pytest.raises(Throttled) as err:
        throttle.check("ada", "10.0.0.1", now + 2.5)
    assert err.value.retry_after == pytest.approx(0.5)  # 2 s after the 5th failure
    throttle.check("bob", "10.0.0.2", now)  # others unaffected


def test_success_clears_the_login() -> None:
    throttle = LoginThrottle(ThrottlePolicy(free_failures=1))
    throttle.failure("ada", "s", 0.0)
    throttle.failure("ada", "s", 0.0)
    throttle.success("ada", "s")
    throttle.check("ada", "s", 0.0)


def test_per_source_limit_catches_spraying_many_logins() -> None:
    throttle = LoginThrottle(ThrottlePolicy(free_failures=3, source_free_failures=5))
    for i in range(6):
        throttle.failure(f"user{i}", "evil", 0.0)
    with pytest.raises(Throttled):
        throttle.check("fresh-user", "evil", 0.0)
    throttle.check("fresh-user", "good", 0.0)


def test_delay_is_capped_and_table_bounded() -> None:
    throttle = LoginThrottle(ThrottlePolicy(free_failures=0, max_delay_s=30.0, max_entries=10))
    for _ in range(50):
        throttle.failure("ada", "s", 0.0)
    with pytest.raises(Throttled) as err:
        throttle.check("ada", "s", 0.0)
    assert err.value.retry_after == 30.0
    for i in range(100):
        throttle.failure(f"u{i}", f"s{i}", 10_000.0)
    assert len(throttle._entries) <= 10
