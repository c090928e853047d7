"""The controller services' one loop (fibric/controller/service.py): backoff, wake, bounded stop.

The event router, scheduler, executor recovery, webhook dispatcher and
sealer all run on it, so what an operator sees of any of them during an
outage, after a write and at shutdown is decided here. The service under
test is a small subclass whose pass fails while a fault is on: a fake at
our own boundary (the `_pass` hook), which is what the loop sees of a
store that is down.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from controller_support import run

from fibric import threads
from fibric.controller import service


class Probe(service.Service):
    """A service that records when each pass ran, and fails while `fault` is set."""

    def __init__(self, **options: float | service.Backoff) -> None:
        super().__init__("probe", **options)  # type: ignore[arg-type]
        self.fault = threading.Event()
        self.passes: list[tuple[float, bool]] = []  # (monotonic time, succeeded)
        self.stuck: threads.Pool | None = None  # set: a pass blocks in a thread of it for 2 s

    async def _pass(self) -> bool:
        if self.stuck is not None:
            await self.stuck.run(time.sleep, 2.0)
        failed = self.fault.is_set()
        self.passes.append((time.monotonic(), not failed))
        if failed:
            raise ConnectionError("the store is down")
        return False


async def until(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s")
        await asyncio.sleep(0.01)


def test_the_backoff_doubles_from_its_base_up_to_its_cap() -> None:
    backoff = service.Backoff(base=0.5, cap=3.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert backoff.delay(10_000) == 3.0  # a streak of any length, no overflow


def test_a_failing_service_backs_off_and_recovers_when_the_fault_clears(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """During an outage the passes slow down (doubling, capped), logged once; afterwards work resumes."""
    probe = Probe(poll_seconds=60.0, backoff=service.Backoff(base=0.05, cap=0.2))
    probe.fault.set()

    async def main() -> list[float]:
        await probe.start()
        try:
            await until(lambda: len(probe.passes) >= 6)
            gaps = [b[0] - a[0] for a, b in zip(probe.passes, probe.passes[1:], strict=False)][:5]
            probe.fault.clear()
            await until(lambda: probe.passes[-1][1])  # the next pass after the fault works
            assert probe.failures == 0
            worked = len(probe.passes)
            await asyncio.sleep(0.5)  # healthy again: it waits its poll interval, no more retries
            assert len(probe.passes) == worked
            return gaps
        finally:
            await probe.stop()

    with caplog.at_level(logging.DEBUG, logger="fibric.controller.service"):
        gaps = run(main())
    for gap, wanted in zip(gaps, [0.05, 0.1, 0.2, 0.2, 0.2], strict=True):
        assert wanted * 0.9 <= gap < wanted + 0.15, gaps  # grows, then stays at the cap
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "the store is down" in errors[0].getMessage()  # once per streak
    assert any("works again" in r.getMessage() for r in caplog.records)


def test_a_wake_runs_a_pass_long_before_the_poll_interval() -> None:
    """A write that wakes a service (an event stored, a receipt written) is acted on at once."""
    probe = Probe(poll_seconds=60.0)

    async def main() -> float:
        await probe.start()
        try:
            await until(lambda: len(probe.passes) == 1)  # the first pass runs at start
            woken = time.monotonic()
            await asyncio.to_thread(probe.wake)  # from another thread, as an API route does
            await until(lambda: len(probe.passes) == 2, timeout=2.0)
            return probe.passes[1][0] - woken
        finally:
            await probe.stop()

    assert run(main()) < 1.0


def test_a_wake_cuts_a_backoff_short() -> None:
    """Whoever woke the service just wrote to the store: the next pass need not wait out the backoff."""
    probe = Probe(poll_seconds=60.0, backoff=service.Backoff(base=30.0, cap=30.0))
    probe.fault.set()

    async def main() -> None:
        await probe.start()
        try:
            await until(lambda: len(probe.passes) == 1)
            probe.fault.clear()
            probe.wake()
            await until(lambda: len(probe.passes) == 2, timeout=2.0)
            assert probe.passes[1][1] and probe.failures == 0
        finally:
            await probe.stop()

    run(main())


def test_stop_returns_within_its_bound_while_a_pass_is_stuck_in_a_thread() -> None:
    """Shutdown is not held up by a pass blocked in a store call that cancellation cannot interrupt."""
    pool = threads.Pool("controller", 1)
    probe = Probe(poll_seconds=60.0, stop_timeout=0.3)
    probe.stuck = pool

    async def main() -> float:
        await probe.start()
        await asyncio.sleep(0.2)  # the first pass is now blocked in the pool's thread
        started = time.monotonic()
        await probe.stop()
        return time.monotonic() - started

    try:
        took = run(main())
    finally:
        pool.close(wait=False)
    assert took < 1.5
    assert probe.passes == []  # the stuck pass never got further


def test_a_service_whose_pool_closed_ends_instead_of_backing_off(caplog: pytest.LogCaptureFixture) -> None:
    """At shutdown the pools close first; a service meeting a closed pool ends, with one quiet line."""
    pool = threads.Pool("controller", 1)
    pool.close()
    probe = Probe(poll_seconds=0.01)
    probe.stuck = pool

    async def main() -> None:
        await probe.start()
        assert probe._task is not None
        await asyncio.wait_for(probe._task, 5)

    with caplog.at_level(logging.INFO, logger="fibric.controller.service"):
        run(main())
    assert [r.getMessage() for r in caplog.records] == ["probe stops: the system is shutting down"]


def test_a_loop_that_crashes_outside_a_pass_is_restarted(caplog: pytest.LogCaptureFixture) -> None:
    """A bug in the loop itself (here: its failure handling raising once) does not end the service."""

    class Crashing(Probe):
        crashed = False

        def _failed(self, error: Exception) -> float:
            if not self.crashed:
                self.crashed = True
                raise RuntimeError("a bug in the failure handling")
            return super()._failed(error)

    probe = Crashing(poll_seconds=60.0, backoff=service.Backoff(base=0.05, cap=0.05))
    probe.fault.set()

    async def main() -> None:
        await probe.start()
        try:
            await until(lambda: len(probe.passes) >= 1 and probe.crashed)
            probe.fault.clear()
            await until(lambda: len(probe.passes) >= 2 and probe.passes[-1][1])  # restarted, and working
        finally:
            await probe.stop()

    with caplog.at_level(logging.ERROR, logger="fibric.controller.service"):
        run(main())
    assert any("its loop crashed; restarting it" in r.getMessage() and r.exc_info for r in caplog.records)
