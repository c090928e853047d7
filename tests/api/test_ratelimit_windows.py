"""The in-process rate-limit counters: fixed one-minute windows that open at a budget's first request."""

from __future__ import annotations

from fibric import settings
from fibric.api import ratelimit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_window_counts_down_and_refuses_past_the_limit() -> None:
    windows = ratelimit.LocalWindows(Clock())

    assert windows.hit("t_1", "reads", 2) == (True, 1, 60.0)
    assert windows.hit("t_1", "reads", 2) == (True, 0, 60.0)
    assert windows.hit("t_1", "reads", 2) == (False, 0, 60.0)


def test_the_window_resets_a_minute_after_its_first_request() -> None:
    clock = Clock()
    windows = ratelimit.LocalWindows(clock)
    windows.hit("t_1", "writes", 1)

    clock.now += 59.5
    allowed, _, reset = windows.hit("t_1", "writes", 1)
    assert not allowed
    assert reset == 0.5

    clock.now += 0.5
    assert windows.hit("t_1", "writes", 1) == (True, 0, 60.0)


def test_budgets_are_per_caller_and_route_class() -> None:
    windows = ratelimit.LocalWindows(Clock())
    windows.hit("t_1", "events", 1)

    assert windows.hit("t_1", "events", 1)[0] is False
    assert windows.hit("t_1", "reads", 1)[0] is True
    assert windows.hit("t_2", "events", 1)[0] is True


def test_closed_windows_are_forgotten() -> None:
    clock = Clock()
    windows = ratelimit.LocalWindows(clock)
    for n in range(100):
        windows.hit(f"anonymous:10.0.0.{n}", "reads", 5)

    clock.now += 61
    windows.hit("t_1", "reads", 5)

    assert list(windows._windows) == [("t_1", "reads")]


def test_the_limiter_reports_whole_seconds_until_reset() -> None:
    limiter = ratelimit.RateLimiter(settings.RateLimitSettings(reads_per_minute=3))
    budget = limiter.hit("t_1", "t_1", "reads")

    assert budget is not None
    assert (budget.limit, budget.remaining, budget.reset, budget.allowed) == (3, 2, 60, True)


def test_a_fresh_window_never_reports_more_than_a_minute_to_reset() -> None:
    clock = Clock()
    clock.now = 8161.962517661547  # (now + 60) - now == 60.00000000000091 in floating point
    windows = ratelimit.LocalWindows(clock)

    _, _, seconds = windows.hit("t_1", "reads", 10)

    assert seconds <= 60.0
