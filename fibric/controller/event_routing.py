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
import logging
import time

from fibric import store
from fibric.controller import operator_runs, service
from fibric.store import routing_store, run_store

log = logging.getLogger(__name__)


class Router(service.Service):
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
        backoff: service.Backoff | None = None,
    ) -> None:
        """`tenant_runs` is one tenant's share of the `concurrency` runs at once (a bulkhead)."""
        if concurrency < 1 or poll_seconds <= 0:
            raise ValueError("a router needs concurrency >= 1 and a positive poll interval")
        super().__init__("event routing", poll_seconds=poll_seconds, backoff=backoff,
                         stop_timeout=stop_timeout)
        self.state = state
        self.runner = runner
        self.batch = batch
        self.concurrency = concurrency
        self.tenant_runs = max(1, tenant_runs)
        self.reap_seconds = reap_seconds
        self._running: dict[routing_store.PendingKey, asyncio.Task[None]] = {}
        self._reaped_at = 0.0

    async def stop(self) -> None:
        """Stop routing; in-flight runs get `stop_timeout` to finish, then are cancelled (events requeue)."""
        await super().stop()
        await service.finish(self._running.values(), self.stop_timeout)

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

    async def _pass(self) -> bool:
        await self.pump()
        return False  # a run that ends wakes the router: its entity's next events become the next run

    async def _dispatch(self) -> None:
        free = self.concurrency - len(self._running)
        if free <= 0 or self._stopping:
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
            if again and not self._stopping:
                self.wake()
