"""The FastAPI application: routes, error handling, admission, idempotency, and the controller's lifespan.

`create_app` is the only constructor and takes everything explicitly; the
app keeps what it was given on `app.state` (see context.py), so tests build as
many independent apps as they like. The controller runs inside the app's
lifespan, on the same event loop as uvicorn (DESIGN.md, Runtime).

Middleware, outermost first: KeyCookie (under /ui only: the approver page's
cookie is the request's bearer key, ui/keycookie.py), RequestId (every response gets `Request-Id`),
Access (the request's metrics sample and access log line), Admission (the key
is resolved once and the rate limit counted; every response gets the
RateLimit headers, or the request ends in 429), BodyLimit (413 before a byte
too many is read), Idempotency (the `Idempotency-Key` header on POSTs). Each
is a plain ASGI class, one concern per module. /healthz, /readyz and /metrics
are probes.py's.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import fibric
from fibric import metrics as metrics_module
from fibric import policies, store, trust
from fibric import settings as settings_module
from fibric.api import (
    access,
    admission,
    context,
    error_responses,
    idempotency,
    middleware,
    openapi,
    probes,
    ratelimit,
    routes,
    ui,
    workers,
)
from fibric.policies import readiness
from fibric.store import receipt_store, secretbox, tallies
from fibric.store import sealed as sealed_module


def create_app(
    settings: settings_module.Settings,
    state: store.StateStore,
    controller: context.Controller | None = None,
    *,
    receipts: receipt_store.Ledger | None = None,
    sealed: sealed_module.SealedLedger | None = None,
    executor: context.Executor | None = None,
    boundary: trust.Boundary | None = None,
    engine: policies.Engine | None = None,
    metrics: metrics_module.Metrics | None = None,
) -> FastAPI:
    """The v1 API over `state`.

    `controller` (see context.Controller) is started and stopped with the app.
    `receipts` reads the receipts of record (default: those of `state`);
    `sealed` is the auditors' ledger SQL queries read (default: the lake in the
    data dir, opened on first use and closed with the app). `executor` (see
    context.Executor) is the hook approve hands plans to; it can also be set
    later as `app.state.executor`. `boundary` is what tenants' specs may declare;
    by default it is read from `settings.trust` (the catalog file, the egress allowlist).
    `engine` is the policy engine GET /readyz checks (none: not checked); `metrics` the
    system's (fibric/metrics.py; default: the app's own), served at GET /metrics.
    """
    record = receipts or receipt_store.StoreLedger(state)
    lake = sealed or sealed_module.open_for(settings.store)
    metrics = metrics or metrics_module.Metrics()
    metrics.watch(lambda per_tenant: tallies.read(state, per_tenant))  # plans, webhook backlog
    probe = readiness.Probe(engine) if engine is not None else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threads = settings.server.worker_threads or workers.default_threads(state.backend.dialect)
        with workers.quick_threads(threads, settings.server.slow_threads) as executor:
            app.state.quick_threads = executor  # routing.Route hands it to workers.run
            if probe is not None:  # /readyz's policy, compiled before the first probe; a daemon thread,
                # so a SIGTERM soon after start never waits for a compile (the quick threads are joined)
                threading.Thread(target=probe.warm, name="fibric-readiness-warm", daemon=True).start()
            if controller is not None:
                await controller.start()
            try:
                yield
            finally:
                if controller is not None:
                    await controller.stop()
                if sealed is None:
                    lake.close()
                query_workers = context.query_workers_of(app)  # routes.receipts makes it
                if query_workers is not None:
                    query_workers.close()
                    context.keep_query_workers(app, None)
                app.state.quick_threads = None

    app = FastAPI(
        title="Fibric API",
        version=fibric.__version__,
        summary="Desired state, events, plans and receipts of governed AI operators.",
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
        # Fibric configures no OpenTelemetry export; FastAPI's own spans, metrics and exception
        # logs would cost every request a few percent of its CPU for nothing.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.fibric = context.Context(settings=settings, state=state, receipts=record, sealed=lake,
                                       controller=controller,
                                       boundary=boundary or trust.Boundary.of(settings), metrics=metrics)
    app.state.executor = executor  # hooks set later by the system or a test (context.py)
    app.state.event_router = None
    context.keep_query_workers(app, None)
    error_responses.install(app)
    # add_middleware wraps: the last added runs first.
    app.add_middleware(idempotency.Idempotency, state=state, box=secretbox.for_store(state, settings))
    app.add_middleware(middleware.BodyLimit, max_body_bytes=settings.server.max_body_bytes)
    app.add_middleware(admission.Admission, state=state,
                       limiter=ratelimit.RateLimiter(settings.rate_limits))
    app.add_middleware(access.Access, metrics=metrics if metrics.enabled else None)
    app.add_middleware(middleware.RequestId)
    for router in routes.ROUTERS:
        app.include_router(router)
    ui.install(app)  # the approver page at /ui/; its cookie middleware goes outside all of the above
    checks: dict[str, probes.Check] = {"store": probes.store_answers(state), "ledger": lambda: _opens(lake)}
    if probe is not None:
        checks["policy"] = probe.check
    probes.install(app, checks, metrics)  # /healthz, /readyz, /metrics
    openapi.install(app)
    return app


def _opens(lake: sealed_module.SealedLedger) -> None:
    lake.ping()
