"""Login throttling: guessing is slowed, the owner's own client is never locked out."""

from __future__ import annotations

import pytest

from gateway.auth.crypto import MasterKey
from gateway.auth.devices import DeviceTokens
from gateway.auth.throttle import LoginThrottle, Throttled, ThrottlePolicy

OWNER, ATTACKER = "10.0.0.1", "203.0.113.9"


def test_backoff_doubles_after_the_free_failures() -> None:
    throttle = LoginThrottle(ThrottlePolicy(free_failures=3, base_delay_s=1.0))
    now = 100.0
    for _ in range(3):
        throttle.check("ada", "10.0.0.1", now)
        throttle.failure("ada", "10.0.0.1", now)
    throttle.check("ada", "10.0.0.1", now)  # three failures are free
    throttle.failure("ada", "10.0.0.1", now)
    with pytest.raises(Throttled) as err:
        throttle.check("ada", "10.0.0.9", now)  # per login, for clients never seen to succeed
    assert err.value.retry_after == pytest.approx(1.0)
    throttle.check("ada", "10.0.0.1", now + 1.0)
    throttle.failure("ada", "10.0.0.1", now + 1.0)
    with pytest.raises(Throttled) as err:
        throttle.check("ada", "10.0.0.1", now + 2.5)
    assert err.value.retry_after == pytest.approx(0.5)  # 2 s after the 5th failure
    throttle.check("bob", "10.0.0.2", now)  # others unaffected


def test_a_guesser_cannot_lock_the_owner_out_of_a_known_source() -> None:
    throttle = LoginThrottle(ThrottlePolicy(free_failures=3, base_delay_s=1.0))
    throttle.success("admin", OWNER, 0.0)  # the owner logged in from here before
    now = 10.0
    refused = 0
    for _ in range(200):  # one wrong password a second for 200 s, from elsewhere
        try:
            throttle.check("admin", ATTACKER, now)
            throttle.failure("admin", ATTACKER, now)
        except Throttled:
            refused += 1
        throttle.check("admin", OWNER, now)  # the owner is never made to wait
        now += 1.0
    assert refused > 180  # the guesser is refused almost every time ...
    with pytest.raises(Throttled) as err:
        throttle.check("admin", ATTACKER, now)
    assert err.value.retry_after > 30  # ... and waits longer and longer
    with pytest.raises(Throttled):  # and moving to a new address does not help
        throttle.check("admin", "198.51.100.7", now)
    # the owner's success does not reset the guesser's progress
    throttle.success("admin", OWNER, now)
    with pytest.raises(Throttled):
        throttle.check("admin", "198.51.100.7", now)


def test_guessing_is_slowed_at_least_as_before() -> None:
    # Before: 3 free failures per login, then 1, 2, 4 ... 900 s for everyone. Now the same
    # holds for every client never seen to log in, however many addresses it uses.
    throttle = LoginThrottle(ThrottlePolicy(free_failures=3, base_delay_s=1.0))
    now, guesses, i = 0.0, 0, 0
    while now < 86_400.0:  # a day of guessing from a fresh address each time
        i += 1
        source = f"10.9.{i // 250 % 250}.{i % 250}"
        try:
            throttle.check("admin", source, now)
        except Throttled as exc:
            now += exc.retry_after
            continue
        throttle.failure("admin", source, now)
        guesses += 1
    ramp = 3 + 10  # 1 + 2 + ... + 512 s
    assert guesses <= ramp + 86_400 / 900 + 1


def test_the_owner_behind_the_guessers_address_uses_a_device_token() -> None:
    devices = DeviceTokens(MasterKey(bytes(32)), "alpha", clock=lambda: 1000.0)
    token = devices.issue("admin")
    device = devices.verify("admin", token)
    assert device is not None
    throttle = LoginThrottle(ThrottlePolicy(free_failures=3, source_free_failures=5))
    throttle.success("admin", OWNER, 0.0, device)
    for i in range(50):  # a guesser shares the owner's address (NAT) and sprays logins
        throttle.failure("admin" if i % 2 else f"user{i}", OWNER, 1.0)
    with pytest.raises(Throttled):
        throttle.check("admin", OWNER, 1.0)  # the address is blocked, for everyone ...
    throttle.check("admin", OWNER, 1.0, device)  # ... except the owner's device
    for _ in range(4):  # the device's own failures still count, on its own counter
        throttle.failure("admin", OWNER, 2.0, device)
    with pytest.raises(Throttled):
        throttle.check("admin", OWNER, 2.0, device)


def test_success_clears_the_client_and_an_untrusted_clients_login() -> None:
    throttle = LoginThrottle(ThrottlePolicy(free_failures=1))
    throttle.failure("ada", "s", 0.0)
    throttle.failure("ada", "s", 0.0)
    throttle.success("ada", "s", 0.0)
    throttle.check("ada", "s", 0.0)
    throttle.check("ada", "elsewhere", 0.0)


def test_known_sources_are_forgotten() -> None:
    throttle = LoginThrottle(ThrottlePolicy(free_failures=0, known_source_ttl_s=100.0))
    throttle.success("ada", OWNER, 0.0)
    assert throttle.trusted("ada", OWNER, 50.0)
    assert not throttle.trusted("ada", OWNER, 150.0)
    assert not throttle.trusted("bob", OWNER, 50.0)


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
        throttle.success(f"v{i}", f"s{i}", 10_000.0)
    assert len(throttle._known) <= 10
    # counters that still block are kept; once their delay has passed they go first
    throttle.failure("late", "s-late", 10_031.0)
    assert len(throttle._entries) <= 10


def test_a_flood_of_junk_failures_does_not_erase_a_guessers_lock() -> None:
    throttle = LoginThrottle(ThrottlePolicy(free_failures=3, max_delay_s=900.0, max_entries=50))
    for _ in range(10):
        throttle.failure("admin", ATTACKER, 0.0)
    for i in range(500):  # junk from many addresses, one failure each (none blocked)
        throttle.failure(f"junk{i}", f"198.51.100.{i % 250}-{i}", 1.0)
    with pytest.raises(Throttled):
        throttle.check("admin", ATTACKER, 2.0)


def test_device_tokens_are_bound_to_login_institution_and_age() -> None:
    now = [1000.0]
    devices = DeviceTokens(MasterKey(bytes(32)), "alpha", ttl_s=100, clock=lambda: now[0])
    token = devices.issue("admin")
    device = devices.verify("admin", token)
    assert device is not None and len(device) == 16
    assert devices.verify("admin", devices.issue("admin", device)) == device  # renewed
    assert devices.verify("bob", token) is None  # another login
    other = DeviceTokens(MasterKey(bytes(32)), "beta", clock=lambda: now[0])
    assert other.verify("admin", token) is None  # another institution
    assert DeviceTokens(MasterKey(bytes(range(32))), "alpha").verify("admin", token) is None
    head, _, mac = token.rpartition(".")
    assert devices.verify("admin", f"{head}.{'A' * len(mac)}") is None  # forged
    for junk in ("", "pdt1", "x" * 500, token + ".", token.replace("pdt1", "pdt2")):
        assert devices.verify("admin", junk) is None
    now[0] += 101
    assert devices.verify("admin", token) is None  # expired
