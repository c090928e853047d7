"""A cap on how many evaluations one tenant may have in flight at once.

The worker pool is shared by every tenant. Without a cap, one tenant whose
policy runs to its deadline on every action, with enough concurrent actions,
holds every worker and every other tenant's decisions wait past their budget.
With it, that tenant's extra decisions queue for one of its own slots (first
come, first served; BLOCK `engine-busy` past the wait bound) while the rest of
the pool keeps serving everyone else.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from fibric.policies import failures, fifo


class TenantSlots:
    """At most `cap` in-flight evaluations per tenant; a freed slot goes to that tenant's oldest waiter."""

    def __init__(self, cap: int) -> None:
        if cap < 1:
            raise ValueError("the per-tenant cap must be at least 1")
        self.cap = cap
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}
        self._queues: dict[str, fifo.Waiters[bool]] = {}  # only tenants with waiters

    @contextlib.contextmanager
    def slot(self, tenant: str, wait_until: float) -> Iterator[None]:
        """Hold one of `tenant`'s slots; failures.Busy if none is free before `wait_until`."""
        self._take(tenant, wait_until)
        try:
            yield
        finally:
            self._give_back(tenant)

    def in_flight(self, tenant: str) -> int:
        with self._lock:
            return self._in_flight.get(tenant, 0)

    def _take(self, tenant: str, wait_until: float) -> None:
        with self._lock:
            held = self._in_flight.get(tenant, 0)
            if held < self.cap and tenant not in self._queues:
                self._in_flight[tenant] = held + 1
                return
            queue = self._queues.setdefault(tenant, fifo.Waiters(self._lock))
            served, _ = queue.wait(wait_until, lambda: False)
            if not queue and self._queues.get(tenant) is queue:  # the last waiter tidies up
                del self._queues[tenant]
            if not served:
                raise failures.Busy(
                    f"tenant {tenant or '(none)'} already had {self.cap} policy evaluations in flight "
                    "for the whole wait bound (FIBRIC_POLICY_TENANT_MAX_IN_FLIGHT)")
            # Served: the slot was handed over with its count, nothing to add.

    def _give_back(self, tenant: str) -> None:
        with self._lock:
            queue = self._queues.get(tenant)
            if queue is not None and queue.hand(True):
                return  # the slot goes straight to the tenant's oldest waiter
            left = self._in_flight[tenant] - 1
            if left:
                self._in_flight[tenant] = left
            else:
                del self._in_flight[tenant]
