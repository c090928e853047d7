"""The embedded engine's limits, one piece at a time: the breaker, the tenant cap, their settings."""

from __future__ import annotations

import threading
import time

import pytest

from fibric import policies, settings
from fibric.policies import breaker, failures, fairness


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_consecutive_timeouts_and_probes_after_the_cooldown() -> None:
    clock = Clock()
    circuit = breaker.Breaker(3, 30.0, clock=clock)
    key = ("t_1", "sha:data.p.decision")

    for _ in range(2):
        assert circuit.admit(key) is False
        circuit.record(key, timed_out=True)
    circuit.record(key, timed_out=False)  # an answer in time resets the count
    for _ in range(3):
        circuit.admit(key)
        circuit.record(key, timed_out=True)

    with pytest.raises(failures.Timeout, match="timed out 3 times in a row"):
        circuit.admit(key)
    assert circuit.admit(("t_2", key[1])) is False  # another tenant's circuit
    clock.now += 30.0
    assert circuit.admit(key) is True  # the probe
    with pytest.raises(failures.Timeout, match="probe evaluation is in flight"):
        circuit.admit(key)
    circuit.abandon(key, True)  # the probe found no free worker: the next decision probes instead
    assert circuit.admit(key) is True
    circuit.record(key, timed_out=True)  # the probe timed out: open for another cooldown
    with pytest.raises(failures.Timeout, match=r"next probe in 30\.0 s"):
        circuit.admit(key)
    assert circuit.opened == 2
    clock.now += 30.0
    assert circuit.admit(key) is True
    circuit.record(key, timed_out=False)
    assert not circuit.is_open(key) and circuit.admit(key) is False


def test_a_breaker_with_threshold_0_never_opens() -> None:
    circuit = breaker.Breaker(0, 30.0)
    for _ in range(10):
        circuit.admit("k")
        circuit.record("k", timed_out=True)
    assert circuit.admit("k") is False and circuit.opened == 0


def test_a_tenant_waits_for_its_own_slot_and_is_busy_past_the_bound() -> None:
    slots = fairness.TenantSlots(1)
    release = threading.Event()

    def hold() -> None:
        with slots.slot("t_a", time.monotonic() + 1):
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert_eventually(lambda: slots.in_flight("t_a") == 1)
        with slots.slot("t_b", time.monotonic() + 0.01):  # another tenant is not held up
            assert slots.in_flight("t_b") == 1
        started = time.monotonic()
        with (pytest.raises(failures.Busy, match="t_a already had 1 policy evaluations in flight"),
              slots.slot("t_a", time.monotonic() + 0.05)):
            pass
        assert time.monotonic() - started >= 0.05
        threading.Timer(0.05, release.set).start()
        with slots.slot("t_a", time.monotonic() + 2):  # woken when the holder gives its slot back
            assert slots.in_flight("t_a") == 1
    finally:
        release.set()
        holder.join()
    assert slots.in_flight("t_a") == 0


def assert_eventually(check: object, timeout: float = 2.0) -> None:
    ends = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < ends
        time.sleep(0.005)


def test_policy_settings_read_the_limits_from_the_environment() -> None:
    defaults = settings.PolicySettings.from_env({})
    assert (defaults.workers, defaults.queue_timeout_ms, defaults.tenant_max_in_flight) == (0, 0, 0)
    assert (defaults.breaker_timeouts, defaults.breaker_cooldown_seconds) == (3, 30.0)

    chosen = settings.PolicySettings.from_env({
        "FIBRIC_POLICY_WORKERS": "3", "FIBRIC_POLICY_QUEUE_TIMEOUT_MS": "20",
        "FIBRIC_POLICY_TENANT_MAX_IN_FLIGHT": "2", "FIBRIC_POLICY_BREAKER_TIMEOUTS": "5",
        "FIBRIC_POLICY_BREAKER_COOLDOWN_SECONDS": "2.5", "FIBRIC_POLICY_TIMEOUT_MS": "250",
    })
    engine = policies.open_configured(chosen)
    try:
        assert isinstance(engine, policies.EmbeddedEngine)
        assert (engine.timeout, engine.queue_timeout) == (0.25, 0.02)
        assert (engine.pool.size, engine.tenants.cap) == (3, 2)
        assert (engine.breaker.threshold, engine.breaker.cooldown) == (5, 2.5)
    finally:
        engine.close()


@pytest.mark.parametrize("variable", [
    "FIBRIC_POLICY_WORKERS", "FIBRIC_POLICY_QUEUE_TIMEOUT_MS", "FIBRIC_POLICY_TENANT_MAX_IN_FLIGHT",
    "FIBRIC_POLICY_BREAKER_TIMEOUTS", "FIBRIC_POLICY_BREAKER_COOLDOWN_SECONDS",
])
def test_negative_limits_are_refused(variable: str) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        settings.PolicySettings.from_env({variable: "-1"})
