"""Rate limits per tenant and route class, counted by the `limits` library.

Three route classes, as the reference meters them: `reads` (GET), `events`
(POST /v1/events) and `writes` (every other method). Each tenant has one
budget per class per minute (settings.RateLimitSettings: the reference's
defaults, per-tenant overrides). Requests without a valid key are counted per
client address, so a flood of bad keys is throttled too.

The window is fixed (it starts at a budget's first request and lasts a
minute), because that is what `RateLimit-Reset` promises: the seconds until
the window resets. Counters live in this process by default (`LocalWindows`,
a dict under a lock: one request's count costs a microsecond, where the
`limits` library's memory storage cost more than some routes' whole work),
or in Redis when a URL is configured, which replicas share; there the
`limits` library counts, with its atomic scripts.

If the counter store fails (Redis down), requests are let through and the
failure is logged: losing the limiter must not take the API down with it.
Such responses carry no RateLimit headers, since there is no budget to report.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import limits
import limits.errors
import limits.storage
import limits.strategies

from fibric import settings

log = logging.getLogger("fibric.api")

READS, WRITES, EVENTS = "reads", "writes", "events"
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def route_class(method: str, path: str) -> str:
    if method in _READ_METHODS:
        return READS
    if method == "POST" and path.rstrip("/") == "/v1/events":
        return EVENTS
    return WRITES


@dataclass(frozen=True)
class Budget:
    """Where one caller stands in one route class's current window."""

    route_class: str
    limit: int
    remaining: int
    reset: int  # seconds until the window resets
    allowed: bool

    def headers(self) -> list[tuple[str, str]]:
        return [("RateLimit-Limit", str(self.limit)), ("RateLimit-Remaining", str(self.remaining)),
                ("RateLimit-Reset", str(self.reset))]

    @property
    def retry_after(self) -> int:
        return max(1, self.reset)


class LocalWindows:
    """Fixed one-minute windows counted in this process; a window opens at its budget's first hit."""

    WINDOW_SECONDS = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._windows: dict[tuple[str, str], list[float]] = {}  # key -> [ends_at, count]
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def hit(self, identity: str, klass: str, limit: int) -> tuple[bool, int, float]:
        """Count one request if the budget allows it: (allowed, remaining, seconds until reset)."""
        now = self.clock()
        with self._lock:
            window = self._windows.get((identity, klass))
            if window is None or now >= window[0]:
                window = self._windows[(identity, klass)] = [now + self.WINDOW_SECONDS, 0]
            allowed = window[1] < limit
            if allowed:
                window[1] += 1
            if now >= self._next_sweep:  # forget closed windows, at most once a window
                self._windows = {k: w for k, w in self._windows.items() if w[0] > now}
                self._windows[(identity, klass)] = window
                self._next_sweep = now + self.WINDOW_SECONDS
            # min: (now + 60) - now can round to a hair over 60, which a header would show as 61.
            return allowed, max(0, limit - int(window[1])), min(self.WINDOW_SECONDS, window[0] - now)


class RateLimiter:
    """Counts requests per (caller, route class) in fixed one-minute windows."""

    def __init__(self, config: settings.RateLimitSettings) -> None:
        self.config = config
        # In-process counters are cheap enough to check on the event loop; Redis is not.
        self.local = config.redis_url is None
        self._windows = LocalWindows()
        self._strategy: limits.strategies.FixedWindowRateLimiter | None = None
        if config.redis_url is not None:
            storage = limits.storage.storage_from_string(
                config.redis_url, wrap_exceptions=True, key_prefix="fibric-ratelimit",
                socket_timeout=2.0, socket_connect_timeout=2.0,
            )
            self._strategy = limits.strategies.FixedWindowRateLimiter(storage)

    def hit(self, identity: str, tenant_id: str | None, klass: str) -> Budget | None:
        """Count one request; None when the counters cannot be reached (the request goes through)."""
        amount = max(self.config.per_minute(tenant_id, klass), 0)
        if self._strategy is None:
            allowed, remaining, seconds = self._windows.hit(identity, klass, amount)
            return Budget(klass, amount, remaining, math.ceil(seconds), allowed)
        item = limits.RateLimitItemPerMinute(amount)
        try:
            allowed = self._strategy.hit(item, identity, klass)
            reset_at, remaining = self._strategy.get_window_stats(item, identity, klass)
        except limits.errors.StorageError as e:
            log.warning("rate limit counters unavailable, letting the request through: %s", e)
            return None
        reset = max(0, math.ceil(reset_at - time.time()))
        return Budget(klass, amount, remaining, reset, allowed)
