"""Named, bounded thread pools, one per kind of blocking work, so one slow dependency cannot starve another.

Blocking work (SQLite and PostgreSQL queries, DuckDB, waiting on a policy
worker process) never runs on the event loop. If every kind of it shared one
pool (asyncio's default executor), a backlog of one kind (a tenant's webhook
deliveries to hosts that never answer) would hold every thread while the
executor's and the runs' work waited behind it. So each kind has its own
pool with its own bound (`settings.ThreadSettings`, docs/operations.md#bulkheads):

| pool | what runs there |
|---|---|
| `executor` | the executor's and operator runs' store work and policy decisions |
| `delivery` | the webhook dispatcher's store work |
| `connectors` | the connector runtime's pin and secret reads |
| `controller` | reconciles, the folder watcher, the scheduler's and recovery's store reads |
| `worker` | the API's quick work: nearly every route's store queries, admission, idempotency |
| `slow` | the API's slow work: routes that may take seconds (a receipts query, an apply) |

The first four are a running system's (`Pools`); the API's two are made and
closed with each app (fibric/api/workers.py says why quick and slow are
apart). DNS needs no thread at all (fibric/trust/resolver.py); Rego runs in
worker processes (fibric/policies/workerpool.py). Nothing uses the loop's
default executor.

`Pool.run` keeps two guarantees: the caller's context variables are copied
into the thread, and a cancelled caller still waits for its thread to finish
before the cancellation goes on (a thread cannot be stopped; nothing that
follows a cancel may race a write that is still running). A `Pool` is also a
`concurrent.futures.Executor`, for code that hands work to an executor itself
(`loop.run_in_executor`), so that work too runs on a named pool.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

KINDS = ("executor", "delivery", "connectors", "controller")


class PoolClosed(RuntimeError):
    """Work was handed to a pool that is closed: the system is shutting down.

    A service loop that meets it ends quietly instead of retrying (and logging)
    forever against a system that no longer runs.
    """


class Pool(Executor):
    """One named, bounded pool; threads start on first use and are named `fibric-<name>_N`."""

    def __init__(self, name: str, size: int) -> None:
        if size < 1:
            raise ValueError(f"the {name} pool needs at least one thread")
        self.name = name
        self.size = size
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` in one of this pool's threads, with the caller's context."""
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        future = asyncio.get_running_loop().run_in_executor(self, call)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await outlast(future)
            raise

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """`fn(*args, **kwargs)` in one of this pool's threads, as a concurrent future (no context copied)."""
        threads = self._threads()
        try:
            return threads.submit(fn, *args, **kwargs)
        except RuntimeError as e:  # closed between _threads() and the submit
            if self._closed:
                raise PoolClosed(f"the {self.name} thread pool is closed") from e
            raise

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Executor's name for `close` (work not yet started is always cancelled)."""
        self.close(wait=wait)

    def close(self, *, wait: bool = True) -> None:
        """Stop taking work; with `wait`, return once the running work is done."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)

    def _threads(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._closed:
                raise PoolClosed(f"the {self.name} thread pool is closed")
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.size, thread_name_prefix=f"fibric-{self.name}")
            return self._executor


class Pools:
    """The pools of one running system, by kind; closed together."""

    def __init__(self, sizes: Mapping[str, int]) -> None:
        unknown = set(sizes) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown thread pool(s): {', '.join(sorted(unknown))}")
        self._pools = {kind: Pool(kind, sizes.get(kind, 4)) for kind in KINDS}

    def __getitem__(self, kind: str) -> Pool:
        return self._pools[kind]

    @property
    def executor(self) -> Pool:
        return self._pools["executor"]

    @property
    def delivery(self) -> Pool:
        return self._pools["delivery"]

    @property
    def connectors(self) -> Pool:
        return self._pools["connectors"]

    @property
    def controller(self) -> Pool:
        return self._pools["controller"]

    def close(self, *, wait: bool = True) -> None:
        for pool in self._pools.values():
            pool.close(wait=wait)


def standalone(kind: str, size: int = 4) -> Pool:
    """A pool of one kind for a component built on its own (a test, a benchmark, a CLI command)."""
    return Pool(kind, size)


async def outlast(future: asyncio.Future[Any]) -> None:
    """Wait for a thread's future whatever cancellations arrive meanwhile (anyio re-delivers them)."""
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError:
            continue
