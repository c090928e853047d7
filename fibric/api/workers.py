"""Running the routes' blocking work in worker threads, off the event loop: quick work and slow work apart.

Quick work (store queries: nearly every route, and the admission and
idempotency middleware's store reads and writes) runs on the app's own
executor, sized by `server.worker_threads`, not through `anyio.to_thread` as
FastAPI runs sync endpoints, and not on the loop's default executor. On our
cheapest routes anyio's per-call bookkeeping (its capacity limiter and a
shielded checkpoint) cost more than the SQLite query itself. Against SQLite
that work is Python holding the GIL plus a local file, so threads beyond the
CPUs only take turns at the GIL: the default is one per CPU
(docs/api.md#performance). Against PostgreSQL a query mostly waits on the
network, so the default is asyncio's, min(32, CPUs + 4).

Slow work (a receipts SQL query, a ledger snapshot, an apply of many specs,
an approval's execution: routes marked with routing.slow) runs on the app's
slow pool instead (`run_slow`, `server.slow_threads` threads, 40 by
default), so a few long requests can never occupy every quick thread and
stall the API behind them, and many can only queue for the slow pool's own
threads (docs/operations.md#bulkheads).

Both pools are made with the app (`quick_threads`) and shut down with it.
Outside an app (a unit test calling these directly) the work runs on anyio's
worker threads, never on the loop's default executor.

Both keep two guarantees:

- The caller's context variables are copied into the thread (auth.PENDING
  is read there).
- A cancelled caller still waits for the thread to finish before the
  cancellation goes on, so nothing (the idempotency middleware's release, a
  retry) runs while a write is still in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from anyio import to_thread
from starlette.types import Scope

P = ParamSpec("P")
T = TypeVar("T")


DEFAULT_SLOW_THREADS = 40  # settings.ServerSettings.slow_threads; anyio's default, what the slow pool was


class AppThreads(ThreadPoolExecutor):
    """An app's quick threads (this executor, `fibric-worker_N`) and, beside them, its slow pool
    (`slow`, `fibric-slow_N`), made and shut down together."""

    def __init__(self, quick: int, slow: int) -> None:
        if quick < 1 or slow < 1:
            raise ValueError("an app needs at least one quick and one slow thread")
        super().__init__(max_workers=quick, thread_name_prefix="fibric-worker")
        self.slow = ThreadPoolExecutor(max_workers=slow, thread_name_prefix="fibric-slow")

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait, cancel_futures=cancel_futures)
        self.slow.shutdown(wait, cancel_futures=cancel_futures)


# The threads of the app serving this request (routing.Route sets it from `app.state.quick_threads`,
# the admission middleware before it, `for_request`); None outside a request: anyio's worker threads.
QUICK: contextvars.ContextVar[Executor | None] = contextvars.ContextVar("fibric_quick_threads", default=None)


def for_request(scope: Scope) -> None:
    """Run this request's `run` and `run_slow` on the threads of the app serving it (middleware runs
    before routing.Route sets them)."""
    app = scope.get("app")
    QUICK.set(getattr(getattr(app, "state", None), "quick_threads", None))


async def run(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)` in a quick worker thread, with the caller's context."""
    return await _run_on(QUICK.get(), fn, *args, **kwargs)


async def run_slow(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)` in a thread of the app's slow pool, with the caller's context."""
    quick = QUICK.get()
    return await _run_on(quick.slow if isinstance(quick, AppThreads) else None, fn, *args, **kwargs)


async def _run_on(
    executor: Executor | None, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
) -> T:
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    if executor is None:  # outside an app: anyio's own worker threads, not the loop's default executor
        return await _outlasting(asyncio.ensure_future(to_thread.run_sync(call)))
    return await _outlasting(asyncio.get_running_loop().run_in_executor(executor, call))


async def _outlasting(future: asyncio.Future[T]) -> T:
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await _outlast(future)
        raise


async def _outlast(future: asyncio.Future[Any]) -> None:
    # A thread cannot be stopped: wait for it, whatever cancellations arrive meanwhile
    # (anyio re-delivers a cancel scope's cancellation at every await).
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError:
            continue


@contextlib.contextmanager
def quick_threads(count: int, slow: int = DEFAULT_SLOW_THREADS) -> Iterator[AppThreads]:
    """An executor of `count` threads for an app's quick work, with `slow` more for its slow work,
    shut down on exit.

    On exit it waits for work still running (the server has stopped taking
    requests by then), so nothing an app started outlives it.
    """
    executor = AppThreads(count, slow)
    try:
        yield executor
    finally:
        executor.shutdown(wait=True)


def default_threads(dialect: str) -> int:
    """Quick-work threads when `server.worker_threads` is unset: one per CPU for SQLite, else asyncio's."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(2, cpus) if dialect == "sqlite" else min(32, cpus + 4)
