"""What a route needs from the app: settings, the stores and the controller.

`create_app` puts one `Context` on `app.state`; routes receive it through the
`Ctx` dependency, so nothing in the API lives in a module-level global and two
apps in one process (tests do this) never share state.

The executor is a separate hook, `app.state.executor` (see `Executor`), so the
controller can attach it once it has built one, after the app exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request

from fibric import metrics as metrics_module
from fibric import settings as settings_module
from fibric import store, trust
from fibric.store import plan_store, receipt_store, sealed


class Controller(Protocol):
    """The controller as the API sees it.

    `notify` is called from worker threads after each committed write, once
    per changed object; it must be thread-safe and must not block (enqueue and
    return). `start` and `stop` run in the app's lifespan.
    """

    def notify(self, tenant_id: str, kind: str, name: str) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


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
    controller: Any | None  # a Controller; Any so duck-typed test doubles fit
    boundary: trust.Boundary  # what a tenant's specs may declare (docs/security.md)
    metrics: metrics_module.Metrics  # the system's (fibric/metrics.py)


async def get_context(request: Request) -> Context:
    # async: a plain attribute read, no reason to hop to the thread pool
    context: Context = request.app.state.fibric
    return context


Ctx = Annotated[Context, Depends(get_context)]


def executor_of(request: Request) -> Any | None:
    """The app's executor hook (an Executor), or None while there is none."""
    return getattr(request.app.state, "executor", None)
