"""The scheduler: a controller service that runs active operators on their cron `schedule`.

Each tick reads the active operators with a schedule and, from the time
each last fired (kept in the store, fibric/store/schedules.py), asks
croniter for the next firing. A due operator fires once and its stored time
moves to now, not to the missed tick, so after any downtime a missed
schedule runs once rather than once per tick missed. Firing is a
compare-and-set on that time, so one replica fires each tick. An operator
seen with a schedule for the first time starts its clock then (it does not
fire at once); one that is deleted, paused or loses its schedule forgets
its clock, so resuming does not fire a run for the time it was off.

A scheduled run senses through the operator's read-only `sense`
capabilities (fibric/controller/operator_runs.py). If the operator's previous
scheduled run is still going when the next tick is due, that tick is spent
without a second run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from croniter import croniter

from fibric import store
from fibric.controller import operator_runs, service
from fibric.store import schedules

log = logging.getLogger(__name__)


class Scheduler(service.Service):
    """Fires operators' cron schedules, at most once per due tick across replicas and restarts."""

    def __init__(
        self,
        state: store.StateStore,
        runner: operator_runs.Runner,
        *,
        poll_seconds: float = 5.0,
        clock: Callable[[], datetime] | None = None,
        stop_timeout: float = 10.0,
        backoff: service.Backoff | None = None,
    ) -> None:
        """`clock` None reads the database's (every replica's scheduler judges ticks by the same one)."""
        if poll_seconds <= 0:
            raise ValueError("the scheduler needs a positive poll interval")
        super().__init__("scheduling", poll_seconds=poll_seconds, backoff=backoff, stop_timeout=stop_timeout)
        self.state = state
        self.runner = runner
        self.clock = clock
        self._runs: set[asyncio.Task[object]] = set()
        self._bad: set[tuple[str, str, str]] = set()  # (tenant, operator, expression) already logged

    async def stop(self) -> None:
        """Stop ticking; scheduled runs in flight get `stop_timeout` to finish, then are cancelled."""
        await super().stop()
        await service.finish(self._runs, self.stop_timeout)

    async def tick(self) -> list[asyncio.Task[object]]:
        """Fire every due schedule now; the runs it started, as tasks (await them to see them finish)."""
        now = self.clock() if self.clock else await self.runner.pool.run(schedules.database_now, self.state)
        operators = await self.runner.pool.run(self._scheduled)
        fired = await self.runner.pool.run(schedules.last_fired, self.state)
        started: list[asyncio.Task[object]] = []
        for operator in operators:
            key = (operator.tenant_id, operator.id)
            previous = fired.get(key)
            if previous is None:
                await self.runner.pool.run(schedules.advance, self.state, *key, None, now)
                continue
            due = self._next(operator, previous)
            if due is None or now < due:
                continue
            if await self.runner.pool.run(schedules.advance, self.state, *key, previous, now):
                task: asyncio.Task[object] = asyncio.create_task(
                    self.runner.run_schedule(operator.tenant_id, operator),
                    name=f"fibric-schedule-{operator.id}")
                self._runs.add(task)
                task.add_done_callback(self._runs.discard)
                started.append(task)
        for tenant_id, operator_id in set(fired) - {(o.tenant_id, o.id) for o in operators}:
            await self.runner.pool.run(schedules.forget, self.state, tenant_id, operator_id)
        return started

    def _next(self, operator: store.StoredObject, previous: datetime) -> datetime | None:
        expression = str(operator.spec.get("schedule"))
        try:
            due: datetime = croniter(expression, previous).get_next(datetime)
        except (ValueError, KeyError) as e:  # croniter's errors subclass ValueError
            marker = (operator.tenant_id, operator.id, expression)
            if marker not in self._bad:
                self._bad.add(marker)
                log.error("operator %s: schedule '%s' is not a cron expression croniter accepts: %s",
                          operator.name, expression, e)
            return None
        return due

    def _scheduled(self) -> list[store.StoredObject]:
        """Every tenant's active operators that have a schedule (worker thread)."""
        found = []
        for tenant in self.state.list_tenants():
            for operator in self.state.list_objects(tenant.id, "Operator"):
                spec = operator.spec
                if spec.get("schedule") and spec.get("lifecycle", "active") == "active":
                    found.append(operator)
        return found

    async def _pass(self) -> bool:
        await self.tick()
        return False
