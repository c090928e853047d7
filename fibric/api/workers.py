"""Running the routes' blocking work (store queries) in worker threads, off the event loop.

The work runs on asyncio's default executor (min(32, CPUs + 4) threads, or
`server.worker_threads`), not through `anyio.to_thread` as FastAPI runs sync
endpoints. On our cheapest routes anyio's per-call bookkeeping (its capacity
limiter and a shielded checkpoint) cost more than the SQLite query itself,
and its 40 threads fight over the GIL (docs/api.md#performance). Two things
anyio guarantees are kept here:

- The caller's context variables are copied into the thread (auth.PENDING
  is read there).
- A cancelled caller still waits for the thread to finish before the
  cancellation goes on, so nothing (the idempotency middleware's release, a
  retry) runs while a write is still in progress.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


async def run(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)` in a worker thread, with the caller's context."""
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    future: asyncio.Future[T] = asyncio.get_running_loop().run_in_executor(None, call)
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


def use_threads(count: int | None) -> None:
    """Give the running loop a default executor of `count` threads (None keeps asyncio's)."""
    if count is not None:
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=count, thread_name_prefix="fibric-worker"))
