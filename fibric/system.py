"""The one place that builds the running system: `fibric serve`, the tests and the benchmarks all use it.

`build(settings)` opens the stores and the policy engine, makes the bounded
thread pools, the connector runtime, the controller with its services
(event router, scheduler, executor recovery, webhook dispatcher) and the API
app, wired to each other, and closes everything when its block ends. The
controller itself runs in the app's lifespan: serve the app (uvicorn, or
tests/live_server.py) and the whole loop runs.

Nothing here decides anything; it only connects the parts. What a part
does is in its own module.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from fibric import connectors, metrics, policies, settings, store, threads, trust
from fibric.api import app as api_app
from fibric.controller import (
    crashpoints,
    decide,
    dispatch,
    event_routing,
    executor,
    loop,
    operator_runs,
    reconcile,
    recovery,
    scheduler,
    sealer,
    service,
)
from fibric.proposers import llm
from fibric.store import leadership, legacy, pin_store, receipt_store, sealed, secretbox, vault


@dataclass(frozen=True)
class Tuning:
    """Knobs of a system that are not installation settings: what tests and benchmarks vary."""

    connectors: connectors.ConnectorSettings | None = None  # default: settings' tenant share, SDK timeouts
    router_poll_seconds: float = 1.0
    route_events: bool = True  # False: events are stored, never routed (tests that propose plans themselves)
    crash: crashpoints.Crashpoints | None = None  # default: FIBRIC_CRASHPOINT (tests of crash safety)
    services: Sequence[loop.Service] = ()  # more services, started before the others (tests)
    environ: Mapping[str, str] | None = None  # the installation's environment (default: this process's)
    metrics: metrics.Metrics | None = None  # default: a registry of its own, as FIBRIC_METRICS says


@dataclass
class System:
    """The parts of one running Fibric, wired; `app` is what to serve."""

    settings: settings.Settings
    state: store.StateStore
    ledger: receipt_store.StoreLedger  # the receipts of record
    lake: sealed.SealedLedger  # the auditors' ledger
    sealer: sealer.Sealer
    engine: policies.Engine
    boundary: trust.Boundary
    pools: threads.Pools
    box: secretbox.SecretBox
    runtime: connectors.ConnectorRuntime
    controller: loop.Controller
    executor: executor.Executor
    router: event_routing.Router
    metrics: metrics.Metrics
    app: Any = field(repr=False)


@contextmanager
def build(
    config: settings.Settings,
    *,
    boundary: trust.Boundary | None = None,
    engine: policies.Engine | None = None,
    state: store.StateStore | None = None,
    lake: sealed.SealedLedger | None = None,
    tuning: Tuning | None = None,
) -> Iterator[System]:
    """The system `config` describes, closed (store, ledger, engine, pools) when the block ends.

    `boundary` defaults to the one `config.trust` describes (its catalog file is
    read now); `engine` to the one `config.policies` describes; `state` and
    `lake` (the sealed ledger) to the stores `config.store` locates. What the
    caller passes in, the caller closes. Raises FibricError (or ValueError for a setting) when
    something cannot open.
    """
    tune = tuning or Tuning()
    environ = dict(os.environ if tune.environ is None else tune.environ)
    limits = config.bulkheads
    counts = tune.metrics or metrics.Metrics(metrics.Mode.from_env(environ))  # docs/operations.md#metrics
    with ExitStack() as closing:
        fence = boundary or trust.Boundary.of(config)
        policy_engine = engine or open_engine(config.policies, environ)
        if engine is None:
            closing.callback(policy_engine.close)
        if state is None:
            state = store.open_store(config.store.location)
            closing.callback(state.close)
        legacy.import_if_present(state, config.store.data_dir)  # a DuckDB ledger of an earlier release
        ledger = receipt_store.StoreLedger(state)  # the receipts of record
        if lake is None:
            lake = sealed.open_for(config.store)
            closing.callback(lake.close)
        pools = threads.Pools(limits.pool_sizes)
        closing.callback(pools.close, wait=False)
        box = secretbox.for_store(state, config)

        controller: loop.Controller  # the runtime's on_change needs it; it is made last
        runtime = connectors.ConnectorRuntime(
            pin_store.SQLPinStore(state),
            tune.connectors or connectors.ConnectorSettings(tenant_calls=limits.tenant_connector_calls),
            environ=environ,
            secrets=lambda tenant_id, name: vault.reveal(state, box, tenant_id, name),
            on_change=lambda tenant_id, name: controller.notify(tenant_id, "Connector", name),
            pool=pools.connectors, resolver=fence.resolver, metrics=counts,
        )
        cache = reconcile.CompileCache()  # one compile per policy version, for reconcile and decisions
        decider = decide.Decider(state, policy_engine, cache)
        # Operator runs: events routed to runs, and cron schedules (docs/operators.md). LLM routes share
        # one client, whose names resolve with the installation's resolver (no thread, a deadline).
        model_http = llm.Connections(fence.resolver)
        runner = operator_runs.Runner(state, decider, runtime=runtime, ledger=ledger, llm=config.llm,
                                      environ=environ, http=model_http.client, pool=pools.executor,
                                      plans_expire=config.executor, metrics=counts)
        backoff = service.Backoff.of(config.controller)  # every background service's retries
        router = event_routing.Router(state, runner, poll_seconds=tune.router_poll_seconds,
                                      concurrency=limits.run_concurrency, tenant_runs=limits.tenant_runs,
                                      backoff=backoff)
        # Receipts of record sealed into the auditors' ledger, continuously (docs/receipts.md#sealing).
        # (The lock's name holds no URL: it is logged, and a URL may carry a password.)
        sealing_lock = (leadership.Leadership(lake.catalog.removeprefix("postgres:"),
                                              f"fibric-sealer:{lake.schema}") if lake.shared else None)
        the_sealer = sealer.Sealer(ledger, lake, metrics=counts, backoff=backoff, leader=sealing_lock)
        # The executor behind approve, and its recovery of what a crash left open (docs/executor.md).
        the_executor = executor.Executor(
            state, ledger, runtime, decider, lease_seconds=config.executor.lease_seconds,
            crash=tune.crash or crashpoints.Crashpoints(environ), pool=pools.executor,
            on_receipt=the_sealer.wake, metrics=counts)
        services: list[loop.Service] = [
            model_http,  # first, so stopped last: after the router and scheduler whose runs use it
            *tune.services,
            *([router] if tune.route_events else []),
            scheduler.Scheduler(state, runner, backoff=backoff),
            recovery.Recovery(the_executor, interval=config.executor.recovery_interval_seconds,
                              backoff=backoff),
            # Webhook deliveries from the outbox (docs/webhooks.md).
            dispatch.Dispatcher(state, config.webhooks, box, environ=environ, boundary=fence,
                                pool=pools.delivery, tenant_deliveries=limits.tenant_deliveries,
                                metrics=counts, backoff=backoff),
            the_sealer,
        ]
        controller = loop.Controller(state, config.controller, connectors=runtime,
                                     reconcilers=reconcile.reconcilers(policy_engine, cache),
                                     services=services, boundary=fence, pool=pools.controller,
                                     leader=status_leader(state), answer_check=runner.answer_check)
        app = api_app.create_app(config, state, controller, receipts=ledger, sealed=lake,
                                 executor=the_executor, boundary=fence, engine=policy_engine,
                                 metrics=counts)
        app.state.event_router = router if tune.route_events else None  # POST /v1/events wakes it
        yield System(config, state, ledger, lake, the_sealer, policy_engine, fence, pools, box, runtime,
                     controller, the_executor, router, counts, app)


def status_leader(state: store.StateStore) -> leadership.Leadership | None:
    """Replicas on one PostgreSQL store elect the one that records status (loop.py); alone, no election."""
    return leadership.among_replicas(state.backend, "fibric-status")


def open_engine(config: settings.PolicySettings, environ: Mapping[str, str]) -> policies.Engine:
    """The Rego engine the settings ask for; ValueError naming the setting when misconfigured."""
    token = None
    if config.token_env is not None:
        token = environ.get(config.token_env)
        if not token:
            raise ValueError(f"FIBRIC_OPA_TOKEN_ENV names {config.token_env}, which is not set")
    return policies.open_configured(config, token=token)

