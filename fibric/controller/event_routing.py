"""The event router: a controller service that routes stored events and starts operator runs.

It sleeps until woken (`wake()`, which the events route calls after storing
a new event; thread-safe and non-blocking) or until `poll_seconds` pass, so
events ingested by another replica are picked up too. Each pass routes every
unrouted event (fibric/store/routing_store.py), then starts a run for each
(operator, entity) with queued events and no run in progress, up to
`concurrency` runs at once in this process, of which one tenant may hold
`tenant_runs`, taking the tenants' oldest work in turn. When a run ends the router
wakes itself: events that piled up for that entity meanwhile become the
next run, one at a time.

Routing state lives in the store, not here: a crash loses nothing, and the
next process (or another replica) carries on. Expired run leases of dead
processes are reaped every `reap_seconds`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time

from fibric import store, threads
from fibric.controller import operator_runs
from fibric.store import routing_store, run_store

log = logging.getLogger(__name__)


class Router:
    """Routes events to subscribed operators and runs them, single-flight per entity."""

    def __init__(
        self,
        state: store.StateStore,
        runner: operator_runs.Runner,
        *,
        poll_seconds: float = 1.0,
        batch: int = routing_store.DEFAULT_BATCH,
        concurrency: int = 4,
        tenant_runs: int = 2,
        reap_seconds: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        """`tenant_runs` is one tenant's share of the `concurrency` runs at once (a bulkhead)."""
        if concurrency < 1 or poll_seconds <= 0:
            raise ValueError("a router needs concurrency >= 1 and a positive poll interval")
        self.state = state
        self.runner = runner
        self.poll_seconds = poll_seconds
        self.batch = batch
        self.concurrency = concurrency
        self.tenant_runs = max(1, tenant_runs)
        self.reap_seconds = reap_seconds
        self.stop_timeout = stop_timeout
        self._lock = threading.Lock()  # guards _loop: wake() runs on request threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running: dict[routing_store.PendingKey, asyncio.Task[None]] = {}
        self._closing = False
        self._reaped_at = 0.0

    def wake(self) -> None:
        """Route now rather than at the next poll. Thread-safe, never blocks; a no-op when not running."""
        with self._lock:
            loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed under us
                loop.call_soon_threadsafe(self._woken.set)

    async def start(self) -> None:
        if self._task is not None:
            return
        self._woken = asyncio.Event()
        self._woken.set()  # a first pass at once: events stored while no router ran
        with self._lock:
            self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._serve(), name="fibric-router")

    async def stop(self) -> None:
        """Stop routing; in-flight runs get `stop_timeout` to finish, then are cancelled (events requeue)."""
        with self._lock:
            self._loop = None
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        running = list(self._running.values())
        if running:
            _, pending = await asyncio.wait(running, timeout=self.stop_timeout)
            for leftover in pending:
                leftover.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def pump(self) -> None:
        """One pass: route everything unrouted, then start runs for the keys that have work."""
        while True:
            routed = await self.runner.pool.run(routing_store.route_pending, self.state, limit=self.batch)
            if routed.events < self.batch:
                break
        if time.monotonic() - self._reaped_at >= self.reap_seconds:
            self._reaped_at = time.monotonic()
            reaped = await self.runner.pool.run(run_store.reap, self.state)
            if reaped:
                log.warning("runs %s were interrupted (their process stopped); their events are requeued",
                            ", ".join(reaped))
        await self._dispatch()

    async def _serve(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self.poll_seconds)
            self._woken.clear()
            try:
                await self.pump()
            except threads.PoolClosed:
                log.info("event routing stops: the system is shutting down")
                return
            except Exception:
                log.exception("routing pass failed; retrying in %.1fs", self.poll_seconds)

    async def _dispatch(self) -> None:
        free = self.concurrency - len(self._running)
        if free <= 0 or self._closing:
            return
        keys = await self.runner.pool.run(routing_store.pending_keys, self.state,
                                          limit=self.concurrency * 4 + len(self._running))
        per_tenant = collections.Counter(k.tenant_id for k in self._running)
        for key in keys:
            if len(self._running) >= self.concurrency:
                break
            if key in self._running or per_tenant[key.tenant_id] >= self.tenant_runs:
                continue
            per_tenant[key.tenant_id] += 1
            self._running[key] = asyncio.create_task(self._run(key), name=f"fibric-run-{key.operator_id}")

    async def _run(self, key: routing_store.PendingKey) -> None:
        again = False
        try:
            await self.runner.run_events(key)
            again = True  # its entity may have more queued, and a slot is free
        except asyncio.CancelledError:
            raise
        except Exception:  # the store failed under the run: leave the retry to the next poll
            log.exception("run of operator %s for %s could not be carried out",
                          key.operator_id, key.entity_key)
        finally:
            self._running.pop(key, None)
            if again and not self._closing:
                self._woken.set()
