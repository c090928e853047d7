"""Named, bounded pools: each kind of blocking work on its own threads, never the loop's default executor."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from types import SimpleNamespace

import pytest

from fibric import threads
from fibric.controller import recovery

REQUEST = contextvars.ContextVar("request", default="none")


def test_work_runs_on_the_named_pool_with_the_callers_context() -> None:
    pool = threads.Pool("delivery", 2)

    async def main() -> tuple[str, str]:
        REQUEST.set("req_1")
        return await pool.run(lambda: (threading.current_thread().name, REQUEST.get()))

    try:
        name, seen = asyncio.run(main())
    finally:
        pool.close()
    assert name.startswith("fibric-delivery") and seen == "req_1"


def test_a_full_pool_holds_only_its_own_kind_of_work() -> None:
    """Deliveries stuck in every delivery thread do not delay the executor's work."""
    pools = threads.Pools({"delivery": 2, "executor": 2})
    release = threading.Event()

    async def main() -> float:
        stuck = [asyncio.ensure_future(pools.delivery.run(release.wait, 10)) for _ in range(6)]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await pools.executor.run(time.sleep, 0.01)
        took = time.monotonic() - started
        release.set()
        await asyncio.gather(*stuck)
        return took

    try:
        assert asyncio.run(main()) < 1.0
    finally:
        pools.close()


def test_a_cancelled_caller_waits_for_its_thread() -> None:
    pool = threads.Pool("executor", 1)
    finished: list[str] = []

    def write() -> None:
        time.sleep(0.2)
        finished.append("written")

    async def main() -> None:
        task = asyncio.ensure_future(pool.run(write))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert finished == ["written"]  # nothing after the cancel raced the write

    try:
        asyncio.run(main())
    finally:
        pool.close()


def test_a_closed_pool_refuses_work_and_bad_sizes_are_refused() -> None:
    pool = threads.Pool("controller", 1)
    pool.close()
    with pytest.raises(threads.PoolClosed, match="controller thread pool is closed"):
        asyncio.run(pool.run(lambda: None))
    with pytest.raises(ValueError, match="at least one"):
        threads.Pool("executor", 0)
    with pytest.raises(ValueError, match="unknown"):
        threads.Pools({"dns": 2})


def test_a_service_whose_pool_closed_stops_instead_of_retrying_forever(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Shutdown closes the pools; recovery (which retries a failed pass every interval) then ends, quietly.

    Before, it logged a traceback every 0.2 s for as long as the process lived.
    """
    pool = threads.Pool("executor", 1)
    pool.close()
    service = recovery.Recovery(SimpleNamespace(pool=pool, state=None, lease_seconds=1.0),  # type: ignore[arg-type]
                                interval=0.0)

    async def main() -> None:
        await service.start()
        assert service._task is not None
        await asyncio.wait_for(service._task, 5)

    with caplog.at_level(logging.INFO, logger="fibric"):
        asyncio.run(main())
    said = [r for r in caplog.records if "recovery" in r.getMessage()]
    assert [r.getMessage() for r in said] == ["executor recovery stops: the system is shutting down"]
    assert not any(r.exc_info for r in said)
