"""Steps on the controller's event loop, before a kind's threaded reconcile.

Some kinds observe something that lives on the controller's event loop (the
connector runtime's MCP sessions, which an operator's answer check also
reads). Their Observer runs there first, under the key's lock, and hands the
threaded reconcile (reconcile.py) what it saw as a reconciler bound to it.
The loop treats every kind alike: it starts the observers, asks each for its
step, and at every resync re-reconciles what an observer keeps running but
the store no longer has (deleted by another replica, whose notification
never came).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import replace
from datetime import datetime

from fibric import connectors as mcp
from fibric import errors, specs, store, threads, trust
from fibric.controller import conditions, reconcile
from fibric.controller.reconcile import AnswerCheck, Reconciler, Result
from fibric.store import vault

log = logging.getLogger(__name__)


class Observer:
    """A kind's step on the controller's event loop, before its threaded reconcile (see above)."""

    async def start(self) -> None:
        """Before the controller's first reconcile."""

    async def stop(self) -> None:
        """After the controller's last reconcile."""

    async def observe(self, tenant_id: str, name: str, now: datetime) -> Reconciler | None:
        """The reconciler to run with what this step observed; None: the kind's own."""
        return None

    def running(self) -> set[tuple[str, str]]:
        """(tenant, name) of what this step keeps running, whether or not it is still stored."""
        return set()


class ConnectorSync(Observer):
    """Makes the connector runtime match the stored Connectors; it is entered on start, left on stop.

    Each Connector key first brings the runtime in line with the stored spec
    (`ensure`, or `remove` once deleted or no longer permitted), then its
    threaded reconcile writes what the runtime observed as the status.
    """

    def __init__(self, state: store.StateStore, runtime: mcp.ConnectorRuntime, boundary: trust.Boundary,
                 pool: threads.Pool, *, stop_timeout: float = 10.0) -> None:
        self.state = state
        self.runtime = runtime
        self.boundary = boundary
        self.pool = pool
        self.stop_timeout = stop_timeout
        self._host: asyncio.Task[None] | None = None
        self._release = asyncio.Event()
        self._running: set[tuple[str, str]] = set()  # ensured, not removed

    async def start(self) -> None:
        """Enter the runtime in its own task: anyio scopes are per task, and `stop` may run in another."""
        entered = asyncio.Event()

        async def host() -> None:
            async with self.runtime:
                entered.set()
                await self._release.wait()

        task = self._host = asyncio.create_task(host(), name="fibric-connectors")
        waiter = asyncio.create_task(entered.wait())
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():
            self._host = None
            task.result()  # entering failed: raise why

    async def stop(self) -> None:
        """Leave the runtime: every connector's server stops (bounded by `stop_timeout`)."""
        task, self._host = self._host, None
        if task is None:
            return
        self._release.set()
        _, pending = await asyncio.wait([task], timeout=self.stop_timeout)
        if pending:
            log.warning("connectors still stopping after %.0fs at shutdown; cancelling", self.stop_timeout)
            task.cancel()
        for outcome in await asyncio.gather(task, return_exceptions=True):
            if isinstance(outcome, Exception):
                log.error("connector runtime failed while stopping: %s", outcome, exc_info=outcome)
        self._running.clear()

    def running(self) -> set[tuple[str, str]]:
        return set(self._running)

    async def observe(self, tenant_id: str, name: str, now: datetime) -> Reconciler | None:
        try:
            obj = await self.pool.run(self.state.get_object, tenant_id, "Connector", name)
        except errors.NotFound:
            await self.runtime.remove(tenant_id, name)
            self._running.discard((tenant_id, name))
            return None
        try:
            spec = specs.models.ConnectorSpec.model_validate(obj.spec)
            grant = await self.pool.run(self._grant, obj, spec)
        except trust.NotPermitted as e:
            await self.runtime.remove(tenant_id, name, forget_pins=False)
            self._running.discard((tenant_id, name))
            return functools.partial(_not_permitted, error=e)
        try:
            observed = await self.runtime.ensure(tenant_id, name, spec, obj.generation, grant=grant)
        except Exception as e:
            return functools.partial(_failed, error=e)
        self._running.add((tenant_id, name))
        return functools.partial(reconcile.reconcile_connector, observed=observed)

    def _grant(self, obj: store.StoredObject, spec: specs.models.ConnectorSpec) -> trust.Grant:
        """What the stored connector may use, by who wrote it (a new secret's fingerprint restarts it)."""
        grant = self.boundary.grant(spec, trust.Origin(obj.origin))
        refs = trust.secret_refs("Connector", obj.spec)
        if refs:
            found = vault.info(self.state, obj.tenant_id, next(iter(refs)))
            grant = replace(grant, secret_fingerprint=found.fingerprint if found else None)
        return grant


class AnswerChecking(Observer):
    """An operator's answer check (it reads the connector runtime, so it runs on the event loop)."""

    def __init__(self, state: store.StateStore, check: AnswerCheck, pool: threads.Pool) -> None:
        self.state = state
        self.check = check
        self.pool = pool

    async def observe(self, tenant_id: str, name: str, now: datetime) -> Reconciler | None:
        try:
            operator = await self.pool.run(self.state.get_object, tenant_id, "Operator", name)
        except errors.NotFound:
            return None
        return functools.partial(reconcile.reconcile_operator, answer=self.check(operator))


def for_kinds(
    state: store.StateStore,
    pool: threads.Pool,
    *,
    connectors: mcp.ConnectorRuntime | None = None,
    boundary: trust.Boundary | None = None,
    answer_check: AnswerCheck | None = None,
    stop_timeout: float = 10.0,
) -> dict[str, Observer]:
    """The steps a controller runs on its event loop, by kind: the connector runtime, answer checks."""
    found: dict[str, Observer] = {}
    if connectors is not None:
        found["Connector"] = ConnectorSync(state, connectors, boundary or trust.Boundary(), pool,
                                           stop_timeout=stop_timeout)
    if answer_check is not None:
        found["Operator"] = AnswerChecking(state, answer_check, pool)
    return found


def _not_permitted(state: store.StateStore, obj: store.StoredObject, now: datetime, *,
                   error: trust.NotPermitted) -> Result:
    """A connector its writer may not run: stopped, and its status says why; raises `error`."""
    message = reconcile.failure_message(error)
    conds = conditions.set_condition(conditions.of(obj.status), conditions.READY, conditions.FALSE,
                                     reconcile.FAILURE_REASONS[type(error)], message, now)
    status = {**obj.status, "connection": "disconnected", "last_error": message, "conditions": conds}
    if status != obj.status:
        state.set_status(obj, status)
    raise error


def _failed(state: store.StateStore, obj: store.StoredObject, now: datetime, *,
            error: Exception) -> Result:
    """The step on the loop failed: the reconcile fails the same way (the loop records and retries it)."""
    raise error
