"""The controller's background services: one loop, one backoff, one way to stop.

The event router, the scheduler, executor recovery, the webhook dispatcher
and the sealer each do the same thing between `start` and `stop`: a pass of
work, then a wait until `wake()` or until `poll_seconds` pass. This module is
that loop, once, so each service is only its pass (`_pass`, which says
whether there is more work at once) and what it must finish on `stop`.

What the loop decides, and nothing else does:

- a pass that raises is retried after `Backoff.delay(n)` (doubling from the
  base, capped: ControllerSettings.max_backoff_seconds), logged once per
  failure streak and once more when a pass succeeds again; a `wake()` cuts
  the wait short, since whoever woke it just wrote to the same store;
- `threads.PoolClosed` means the system is shutting down: the loop ends,
  with one line at INFO and no traceback;
- the loop is supervised: anything else escaping it (a bug outside a pass)
  is logged with its traceback and the loop is restarted after the backoff,
  so a service never dies silently while the process runs;
- `stop()` cancels the loop and waits at most `stop_timeout` seconds: a pass
  stuck in a thread that cancellation cannot interrupt (threads.Pool.run
  outlasts it) is left behind, logged, instead of holding up shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Collection
from typing import Any

from fibric import errors, settings, threads

log = logging.getLogger(__name__)

BASE_BACKOFF_SECONDS = 0.5


@dataclasses.dataclass(frozen=True)
class Backoff:
    """How long to wait after failures in a row: the controller's one backoff formula."""

    base: float = BASE_BACKOFF_SECONDS
    cap: float = settings.ControllerSettings.max_backoff_seconds

    @classmethod
    def of(cls, config: settings.ControllerSettings) -> Backoff:
        return cls(BASE_BACKOFF_SECONDS, config.max_backoff_seconds)

    def delay(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failure in a row (1-based): base doubling, capped."""
        return min(self.cap, self.base * 2 ** min(max(failures, 1) - 1, 32))


class Service:
    """Base of a controller service: subclasses give `_pass`, and extend `stop` for work in flight."""

    def __init__(
        self,
        name: str,
        *,
        poll_seconds: float,
        backoff: Backoff | None = None,
        stop_timeout: float = 10.0,
        min_gap: float = 0.0,
    ) -> None:
        """`name` is what the logs call it ("event routing"); `poll_seconds` the wait between passes
        when nobody wakes it; `min_gap` the least time from one pass's start to the next's, even woken."""
        if poll_seconds < 0:
            raise ValueError(f"{name}: the poll interval cannot be negative")
        self.name = name
        self.poll_seconds = poll_seconds
        self.backoff = backoff or Backoff()
        self.stop_timeout = stop_timeout
        self.min_gap = min(min_gap, poll_seconds)
        self.failures = 0  # failed passes in a row
        self._lock = threading.Lock()  # guards _loop: wake() runs on other threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def _pass(self) -> bool:
        """One pass of the service's work; True when there is more to do at once."""
        raise NotImplementedError

    def wake(self) -> None:
        """Run a pass now rather than at the next poll. Thread-safe, never blocks; a no-op when stopped."""
        if self._woken.is_set():  # already woken: no need to wake the loop again
            return
        with self._lock:
            loop = self._loop
        if loop is None:
            return
        if _running_loop() is loop:
            self._woken.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed under us
                loop.call_soon_threadsafe(self._woken.set)

    async def start(self) -> None:
        """Start the loop; its first pass runs at once (work stored while no service ran)."""
        if self._task is not None:
            return
        self._stopping = False
        self._woken = asyncio.Event()
        with self._lock:
            self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._supervise(), name=f"fibric-{self.name.replace(' ', '-')}")

    async def stop(self) -> None:
        """Stop the loop, waiting at most `stop_timeout` for a pass under way to give up."""
        with self._lock:
            self._loop = None
        self._stopping = True
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        _, pending = await asyncio.wait([task], timeout=self.stop_timeout)
        if pending:
            log.warning("%s: a pass is still running after %.1fs at shutdown; leaving it behind",
                        self.name, self.stop_timeout)

    async def _supervise(self) -> None:
        crashes = 0
        while not self._stopping:
            try:
                await self._serve()
                return
            except Exception:  # a bug outside a pass: the service must not end while the process runs
                crashes += 1
                delay = self.backoff.delay(crashes)
                log.exception("%s: its loop crashed; restarting it in %.1fs", self.name, delay)
                await asyncio.sleep(delay)

    async def _serve(self) -> None:
        delay = 0.0  # the first pass runs at once
        while not self._stopping:
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._woken.wait(), delay)
            self._woken.clear()  # before the pass: a wake during it means "look again"
            started = time.monotonic()
            try:
                more = await self._pass()
            except threads.PoolClosed:
                log.info("%s stops: the system is shutting down", self.name)
                return
            except Exception as e:
                delay = self._failed(e)
                continue
            if self.failures:
                log.info("%s works again after %d failed passes", self.name, self.failures)
                self.failures = 0
            gap = started + self.min_gap - time.monotonic()
            if gap > 0:
                await asyncio.sleep(gap)
            delay = 0.0 if more else self.poll_seconds

    def _failed(self, error: Exception) -> float:
        """Count a failed pass; log the first of a streak; how long to wait before the next."""
        self.failures += 1
        delay = self.backoff.delay(self.failures)
        if self.failures == 1:
            log.error("%s: a pass failed; retrying in %.1fs, backing off while it fails: %s",
                      self.name, delay, error, exc_info=not isinstance(error, errors.FibricError))
        else:
            log.debug("%s: pass %d in a row failed; retrying in %.1fs: %s", self.name, self.failures,
                      delay, error)
        return delay


async def finish(tasks: Collection[asyncio.Task[Any]], timeout: float) -> None:
    """Let tasks in flight (runs, deliveries) finish for `timeout` seconds, then cancel the rest."""
    if not tasks:
        return
    tasks = list(tasks)
    _, late = await asyncio.wait(tasks, timeout=timeout)
    for task in late:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
