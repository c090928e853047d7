"""Threads waiting for a scarce thing (a worker, a tenant's slot), served first come, first served.

A plain Condition lets the thread that just gave the thing back take it again
before the thread it woke can run (it holds the GIL): under steady load the
same waiter loses every race and times out while others go through. Here the
giver hands the thing straight to the oldest waiter, so a wait is bounded by
the queue in front of it.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Ticket(Generic[T]):
    ready: threading.Condition
    served: bool = False
    item: T | None = field(default=None)


class Waiters(Generic[T]):
    """A FIFO of waiting threads; every method must be called with `lock` held."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._queue: collections.deque[_Ticket[T]] = collections.deque()

    def __len__(self) -> int:
        return len(self._queue)

    def wait(self, until: float, stop: Callable[[], bool]) -> tuple[bool, T | None]:
        """Queue up until served: (True, item), or (False, None) at `until` or once `stop()` holds."""
        ticket: _Ticket[T] = _Ticket(threading.Condition(self._lock))
        self._queue.append(ticket)
        while not ticket.served:
            remaining = until - time.monotonic()
            if remaining <= 0 or stop():
                self._queue.remove(ticket)
                return False, None
            ticket.ready.wait(remaining)
        return True, ticket.item

    def hand(self, item: T) -> bool:
        """Give `item` to the oldest waiter; False when nobody waits (keep it)."""
        if not self._queue:
            return False
        ticket = self._queue.popleft()
        ticket.served, ticket.item = True, item
        ticket.ready.notify()
        return True

    def wake_all(self) -> None:
        """Wake every waiter to re-check `stop()` (on close)."""
        for ticket in self._queue:
            ticket.ready.notify()
