"""Running the routes' blocking work in worker threads, off the event loop: quick work and slow work apart.

Quick work (store queries: nearly every route, and the admission and
idempotency middleware's store reads and writes) runs on the app's own
quick pool, sized by `server.worker_threads`, not through `anyio.to_thread` as
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

Both pools are `threads.Pool`s (named `worker` and `slow`, so their threads
read `fibric-worker_N` and `fibric-slow_N`), made with the app
(`quick_threads`) and closed with it. `threads.Pool.run` keeps the two
guarantees every hop relies on: the caller's context variables are copied
into the thread (auth.py's owed key check is read there), and a cancelled
caller still waits for the thread to finish before the cancellation goes on,
so nothing (the idempotency middleware's release, a retry) runs while a
write is still in progress.

Outside an app (a unit test calling a route's helper directly) each call
gets a pool of one thread of its own, closed after it: never the loop's
default executor, and never another app's threads.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

from starlette.types import Scope

from fibric import threads
from fibric.store import dialect as dialects

P = ParamSpec("P")
T = TypeVar("T")


DEFAULT_SLOW_THREADS = 40  # settings.ServerSettings.slow_threads; anyio's default, what the slow pool was


class AppThreads(threads.Pool):
    """An app's quick threads (this pool, `fibric-worker_N`) and, beside them, its slow pool
    (`slow`, `fibric-slow_N`), made and closed together."""

    def __init__(self, quick: int, slow: int) -> None:
        if quick < 1 or slow < 1:
            raise ValueError("an app needs at least one quick and one slow thread")
        super().__init__("worker", quick)
        self.slow = threads.Pool("slow", slow)

    def close(self, *, wait: bool = True) -> None:
        super().close(wait=wait)
        self.slow.close(wait=wait)


# The threads of the app serving this request (routing.Route sets it from `app.state.quick_threads`,
# the admission middleware before it, `for_request`); None outside a request.
QUICK: contextvars.ContextVar[AppThreads | None] = contextvars.ContextVar("fibric_quick_threads",
                                                                          default=None)


def for_request(scope: Scope) -> None:
    """Run this request's `run` and `run_slow` on the threads of the app serving it (middleware runs
    before routing.Route sets them)."""
    app = scope.get("app")
    QUICK.set(getattr(getattr(app, "state", None), "quick_threads", None))


async def run(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)` in a quick worker thread, with the caller's context."""
    app = QUICK.get()
    if app is None:
        return await _outside_an_app("worker", fn, *args, **kwargs)
    return await app.run(fn, *args, **kwargs)


async def run_slow(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)` in a thread of the app's slow pool, with the caller's context."""
    app = QUICK.get()
    if app is None:
        return await _outside_an_app("slow", fn, *args, **kwargs)
    return await app.slow.run(fn, *args, **kwargs)


async def _outside_an_app(kind: str, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    pool = threads.standalone(kind, 1)
    try:
        return await pool.run(fn, *args, **kwargs)
    finally:
        pool.close(wait=False)  # the work is over (run outlasts a cancel): its thread ends on its own


@contextlib.contextmanager
def quick_threads(count: int, slow: int = DEFAULT_SLOW_THREADS) -> Iterator[AppThreads]:
    """A pool of `count` threads for an app's quick work, with `slow` more for its slow work,
    closed on exit.

    On exit it waits for work still running (the server has stopped taking
    requests by then), so nothing an app started outlives it.
    """
    pools = AppThreads(count, slow)
    try:
        yield pools
    finally:
        pools.close(wait=True)


def default_threads(dialect: str) -> int:
    """Quick-work threads when `server.worker_threads` is unset: one per CPU where queries are CPU work
    in this process (SQLite), else asyncio's (a network database)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(2, cpus) if dialects.named(dialect).in_process else min(32, cpus + 4)
