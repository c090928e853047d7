"""Running the routes' blocking work in worker threads, off the event loop: quick work and slow work apart.

Quick work (store queries: nearly every route) runs on the app's own
executor, sized by `server.worker_threads`, not through `anyio.to_thread` as
FastAPI runs sync endpoints, and not on the loop's default executor, which
the controller's background work uses. On our cheapest routes anyio's per-call
bookkeeping (its capacity limiter and a shielded checkpoint) cost more than
the SQLite query itself. Against SQLite that work is Python holding the GIL
plus a local file, so threads beyond the CPUs only take turns at the GIL:
the default is one per CPU (docs/api.md#performance). Against PostgreSQL a
query mostly waits on the network, so the default is asyncio's, min(32,
CPUs + 4).

Slow work (a receipts SQL query, a ledger snapshot, an apply of many specs:
routes marked with routing.slow) runs on anyio's thread pool instead
(`run_slow`), so a few long requests can never occupy every quick thread
and stall the API behind them.

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

P = ParamSpec("P")
T = TypeVar("T")


# The quick threads of the app serving this request (routing.Route sets it from
# `app.state.quick_threads`); None, outside a request, is the loop's default executor.
QUICK: contextvars.ContextVar[Executor | None] = contextvars.ContextVar("fibric_quick_threads", default=None)


async def run(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)` in a quick worker thread, with the caller's context."""
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await _outlasting(asyncio.get_running_loop().run_in_executor(QUICK.get(), call))


async def run_slow(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)` in a thread of the slow pool (anyio's), with the caller's context."""
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await _outlasting(asyncio.ensure_future(to_thread.run_sync(call)))


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
def quick_threads(count: int) -> Iterator[Executor]:
    """An executor of `count` threads for an app's quick work, shut down on exit.

    On exit it waits for work still running (the server has stopped taking
    requests by then), so nothing an app started outlives it.
    """
    executor = ThreadPoolExecutor(max_workers=count, thread_name_prefix="fibric-worker")
    try:
        yield executor
    finally:
        executor.shutdown(wait=True)


def default_threads(dialect: str) -> int:
    """Quick-work threads when `server.worker_threads` is unset: one per CPU for SQLite, else asyncio's."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(2, cpus) if dialect == "sqlite" else min(32, cpus + 4)
