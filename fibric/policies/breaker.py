"""A circuit breaker per policy version: stop evaluating a policy that keeps timing out.

Killing a runaway evaluation at its deadline bounds one decision's cost to one
budget of CPU plus a worker restart; a policy version that times out on every
action would still spend that on every action. After `threshold` consecutive
timeouts of one version for one tenant the breaker opens: that version's
decisions for that tenant BLOCK `fail-closed:timeout` at once, without being
evaluated, for `cooldown` seconds. Then one decision goes through as a probe:
an answer in time closes the breaker, another timeout opens it again.

Keyed by tenant as well as version, so one tenant's inputs cannot open the
breaker of another tenant that happens to run the same Rego source.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from fibric.policies import failures


@dataclass
class _State:
    timeouts: int = 0  # consecutive
    open_until: float | None = None
    probing: bool = False  # the one decision let through after the cooldown is in flight


class Breaker:
    """Consecutive-timeout counters and open circuits, safe to use from many threads."""

    def __init__(
        self, threshold: int = 3, cooldown: float = 30.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if threshold < 0 or cooldown < 0:
            raise ValueError("the breaker's threshold and cooldown must not be negative")
        self.threshold = threshold  # 0: never opens
        self.cooldown = cooldown
        self.opened = 0  # how many times a circuit opened, for metrics and tests
        self._clock = clock
        self._lock = threading.Lock()
        self._states: dict[Hashable, _State] = {}

    def admit(self, key: Hashable) -> bool:
        """Let a decision through (True when it is the probe); failures.Timeout while the circuit is open."""
        if not self._states:  # the common case: nothing has timed out, no lock taken
            return False
        with self._lock:
            state = self._states.get(key)
            if state is None or state.open_until is None:
                return False
            wait = state.open_until - self._clock()
            if wait > 0 or state.probing:
                when = f"the next probe in {wait:.1f} s" if wait > 0 else "a probe evaluation is in flight"
                raise failures.Timeout(
                    f"not evaluated: this policy version timed out {state.timeouts} times in a row, so its "
                    f"circuit is open ({when})")
            state.probing = True
            return True

    def record(self, key: Hashable, *, timed_out: bool) -> None:
        """Count a timeout, or close the circuit after an answer that came in time."""
        if not timed_out and not self._states:  # the common case again: nothing to reset
            return
        with self._lock:
            if not timed_out:
                self._states.pop(key, None)
                return
            if not self.threshold:
                return
            state = self._states.setdefault(key, _State())
            state.timeouts += 1
            state.probing = False
            if state.timeouts >= self.threshold:
                state.open_until = self._clock() + self.cooldown
                self.opened += 1

    def abandon(self, key: Hashable, probe: bool) -> None:
        """The admitted decision was not evaluated (no free worker): let the next one probe."""
        if not probe:
            return
        with self._lock:
            state = self._states.get(key)
            if state is not None:
                state.probing = False

    def is_open(self, key: Hashable) -> bool:
        with self._lock:
            state = self._states.get(key)
            return state is not None and state.open_until is not None
