"""What a route needs from the app: settings, the stores and the controller.

`create_app` puts one `Context` on `app.state`; routes receive it through the
`Ctx` dependency, so nothing in the API lives in a module-level global and two
apps in one process (tests do this) never share state.

Three hooks live beside it on `app.state`, because they are attached or made
after the app exists: the executor (`app.state.executor`, see `Executor`; the
system or a test sets it once it has built one), the event router
(`app.state.event_router`, set by fibric/system.py) and the receipts query
workers (`app.state.query_workers`, started on the first query). Routes read
them through the typed accessors below, never `app.state` by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, runtime_checkable

from fastapi import Depends, FastAPI, Request

from fibric import metrics as metrics_module
from fibric import settings as settings_module
from fibric import store, trust
from fibric.store import plan_store, query_worker, receipt_store, sealed


class Controller(Protocol):
    """The controller as the API sees it.

    `notify` is called from worker threads after each committed write, once
    per changed object; it must be thread-safe and must not block (enqueue and
    return). `start` and `stop` run in the app's lifespan.
    """

    def notify(self, tenant_id: str, kind: str, name: str) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@runtime_checkable
class ToolAcknowledger(Protocol):
    """A controller that can pin a running connector's tools itself (POST /v1/connectors/{id}/ack).

    Blocking (call it from a worker thread); False when the connector is not
    running there, and the route pins through the store instead.
    """

    def acknowledge_tools(self, tenant_id: str, name: str) -> bool: ...


class EventRouter(Protocol):
    """The event router, which POST /v1/events wakes when a new event is stored (thread-safe)."""

    def wake(self) -> None: ...


class Executor(Protocol):
    """The hook behind POST /v1/plans/{id}/approve: disposes of an approved plan.

    `execute` receives a plan this request has just moved from `proposed` to
    `approved` (so no other approval can run it), evaluates each action (or
    only those whose idempotency_key is in `only_actions`) against the policy,
    calls the tools, writes the receipts, records the results with
    `plan_store.record_results`, and returns the plan as stored afterwards. It may
    be a plain method (run on the slow threads, workers.run_slow) or a
    coroutine function (awaited on the event loop). Without an executor
    (`app.state.executor` is None) the API runs nothing: approve answers 500
    internal_error and leaves the plan `proposed`.
    """

    def execute(self, plan: plan_store.Plan, *, only_actions: Sequence[str] | None) -> Any: ...


@dataclass(frozen=True)
class Context:
    settings: settings_module.Settings
    state: store.StateStore
    receipts: receipt_store.Ledger  # the receipts of record (the state store)
    sealed: sealed.SealedLedger  # the auditors' ledger that SQL queries read
    controller: Controller | None
    boundary: trust.Boundary  # what a tenant's specs may declare (docs/security.md)
    metrics: metrics_module.Metrics  # the system's (fibric/metrics.py)


async def get_context(request: Request) -> Context:
    # async: a plain attribute read, no reason to hop to the thread pool
    context: Context = request.app.state.fibric
    return context


Ctx = Annotated[Context, Depends(get_context)]


def executor_of(request: Request) -> Executor | None:
    """The app's executor hook, or None while there is none."""
    executor: Executor | None = request.app.state.executor
    return executor


def event_router_of(request: Request) -> EventRouter | None:
    """The app's event router, or None when this app has none."""
    router: EventRouter | None = request.app.state.event_router
    return router


def query_workers_of(app: FastAPI) -> query_worker.Pool | None:
    """The app's receipts query workers, or None until the first query starts them."""
    pool: query_worker.Pool | None = app.state.query_workers
    return pool


def keep_query_workers(app: FastAPI, pool: query_worker.Pool | None) -> None:
    """Start using `pool` as the app's query workers (None: the app has none now)."""
    app.state.query_workers = pool
