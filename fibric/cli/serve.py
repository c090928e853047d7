"""`fibric serve`: the API and the controller in one process, on one event loop.

uvicorn's `Server.serve()` runs inside our own `asyncio.run`, so the folder
watcher (`--specs DIR --watch`) runs beside it as a task; the controller
runs in the app's lifespan, and with it the MCP connector runtime (stdio
servers start in this process's working directory unless a spec sets cwd).
SIGTERM and SIGINT shut down gracefully: uvicorn stops taking requests and
drains, the lifespan stops the controller (and every MCP server), the
watcher stops, and the store is closed; the exit code is 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import click
import uvicorn

from fibric import connectors, errors, policies, proposers, settings, store, trust
from fibric.api import app as api_app
from fibric.api import protocol
from fibric.cli import edge
from fibric.controller import (
    apply,
    bootstrap,
    crashpoints,
    decide,
    dispatch,
    executor,
    loop,
    reconcile,
    recovery,
    routing,
    runs,
    scheduler,
    watch,
)
from fibric.store import pins, receipts, secretbox, vault

log = logging.getLogger("fibric.serve")
WATCH_STOP_TIMEOUT = 5.0


@click.command("serve")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Data directory of the SQLite store [env FIBRIC_DATA_DIR; default ./.fibric].")
@click.option("--host", default=None, help="Address to listen on [env FIBRIC_HOST; default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port to listen on (0: any free port) "
              "[env FIBRIC_PORT; default 8080].")
@click.option("--store", "store_url", default=None,
              help="PostgreSQL URL of the state store, instead of SQLite [env FIBRIC_STORE].")
@click.option("--specs", "specs_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Apply this specs folder at start (pruning what left it) [env FIBRIC_SPECS].")
@click.option("--watch", is_flag=True, help="With --specs: re-apply the folder whenever a file changes.")
@click.option("--tenant", "tenant_name", default="default", show_default=True,
              help="Tenant that owns the --specs folder.")
@click.option("--connector-catalog", "connector_catalog", type=click.Path(dir_okay=False), default=None,
              help="YAML file of the MCP servers tenants' connectors may name (transport.catalog) "
                   "[env FIBRIC_CONNECTOR_CATALOG]; see docs/security.md.")
@click.option("--egress-allow", "egress_allow", multiple=True,
              help="A host, *.domain, IP or CIDR tenants' HTTP connectors and webhooks may reach although "
                   "private or loopback; repeat it [env FIBRIC_EGRESS_ALLOW, comma-separated].")
def serve(data_dir: str | None, host: str | None, port: int | None, store_url: str | None,
          specs_dir: str | None, watch: bool, tenant_name: str, connector_catalog: str | None,
          egress_allow: tuple[str, ...]) -> None:
    """Run the API server and the controller.

    On the first start it creates the `default` tenant and prints its first
    API key (all scopes) once, on stderr.
    """
    # Whatever this process or its libraries create later (DuckDB's WAL, SQLite journals) is the
    # owner's only; the store also sets its modes explicitly (fibric/store/filemodes.py).
    os.umask(0o077)
    try:
        config = settings.Settings.from_env(
            data_dir=data_dir, store_url=store_url, host=host, port=port, specs_dir=specs_dir, watch=watch,
            connector_catalog=connector_catalog, egress_allow=egress_allow or None,
        )
        boundary = trust.Boundary.of(config)  # the installation's catalog and allowlist, read once
    except ValueError as e:  # a FIBRIC_* variable that cannot be what it names
        raise click.UsageError(str(e)) from e
    except errors.SpecInvalid as e:
        raise click.UsageError(f"the connector catalog is invalid:\n{e}") from e
    if config.controller.watch and config.controller.specs_dir is None:
        raise click.UsageError("--watch needs --specs DIR")
    _configure_logging()
    try:
        proposers.check_routes(config.llm)  # a typo in an LLM route fails here, not in the first run
    except errors.FibricError as e:
        raise click.UsageError(str(e)) from e
    engine = _open_policy_engine(config.policies)
    state = edge.open_store(config.store.location)
    ledger = receipts.Ledger(config.store.data_dir / api_app.RECEIPTS_FILE)
    try:
        _bootstrap(state, config)
        # The controller owns the MCP connectors; their changes requeue the Connector to record them.
        box = secretbox.for_store(state, config)
        runtime = connectors.ConnectorRuntime(
            pins.SQLPinStore(state), connectors.ConnectorSettings(),
            secrets=lambda tenant_id, name: vault.reveal(state, box, tenant_id, name),
            on_change=lambda tenant_id, name: controller.notify(tenant_id, "Connector", name),
        )
        cache = reconcile.CompileCache()  # one compile per policy version, for reconcile and decisions
        parts = Parts(state=state, config=config, engine=engine, ledger=ledger, connectors=runtime,
                      decider=decide.Decider(state, engine, cache), boundary=boundary)
        controller = loop.Controller(state, config.controller, connectors=runtime,
                                     reconcilers=reconcile.reconcilers(engine, cache),
                                     services=_services(parts), boundary=boundary)
        options = apply.Options(boundary, box)
        tenant_id = None
        if config.controller.specs_dir is not None:
            tenant_id = state.get_tenant(tenant_name).id
            _apply_at_start(state, controller, tenant_id, config, options)
        app = api_app.create_app(config, state, controller, receipts=ledger, executor=parts.executor,
                                 boundary=boundary)
        app.state.event_router = parts.event_router
        server = uvicorn.Server(uvicorn.Config(
            app, host=config.server.host, port=config.server.port, lifespan="on",
            timeout_graceful_shutdown=10,
            http=protocol.FibricH11Protocol, h11_max_incomplete_event_size=protocol.MAX_HEADER_BYTES,
        ))
        _exit_gracefully_on_signals(server)
        asyncio.run(_run(server, state, controller, tenant_id, config, options))
    finally:
        ledger.close()
        state.close()
        engine.close()


@dataclass
class Parts:
    """What serve builds once and hands to the controller's services and the API."""

    state: store.StateStore
    config: settings.Settings
    engine: policies.Engine
    ledger: receipts.Ledger
    connectors: connectors.ConnectorRuntime
    decider: decide.Decider  # the operator's policy on one action, fail-closed
    boundary: trust.Boundary  # what tenants' specs may reach (webhook egress)
    executor: Any = None  # the approve hook (fibric.api.context.Executor), once there is one
    event_router: Any = None  # woken by POST /v1/events (app.state.event_router), once there is one


def _services(parts: Parts) -> list[loop.Service]:
    """The controller's long-running services, in start order (stopped in reverse)."""
    services: list[loop.Service] = []
    # Operator runs: events routed to runs, and cron schedules (docs/operators.md).
    runner = runs.Runner(parts.state, parts.decider, runtime=parts.connectors, ledger=parts.ledger,
                         llm=parts.config.llm)
    parts.event_router = routing.Router(parts.state, runner)  # POST /v1/events wakes it
    services += [parts.event_router, scheduler.Scheduler(parts.state, runner)]
    # The executor behind approve, and its recovery of intents a crash left open (docs/executor.md).
    try:
        crash = crashpoints.Crashpoints()  # test-only (docs/executor.md#crash-safety)
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    parts.executor = executor.Executor(parts.state, parts.ledger, parts.connectors, parts.decider,
                                       lease_seconds=parts.config.executor.lease_seconds, crash=crash)
    services.append(recovery.Recovery(parts.executor,
                                      interval=parts.config.executor.recovery_interval_seconds))
    # Webhook deliveries from the outbox (docs/webhooks.md).
    services.append(dispatch.Dispatcher(parts.state, parts.config.webhooks,
                                        secretbox.for_store(parts.state, parts.config),
                                        boundary=parts.boundary))
    return services


def _open_policy_engine(config: settings.PolicySettings) -> policies.Engine:
    """The Rego engine `config.policies` asks for; a usage error, not a traceback, when misconfigured."""
    token = None
    if config.token_env is not None:
        token = os.environ.get(config.token_env)
        if not token:
            raise click.UsageError(f"FIBRIC_OPA_TOKEN_ENV names {config.token_env}, which is not set")
    try:
        return policies.open_configured(config, token=token)
    except ValueError as e:
        raise click.UsageError(str(e)) from e


def _bootstrap(state: store.StateStore, config: settings.Settings) -> None:
    created = bootstrap.bootstrap(state, config.reseller_id)
    if created is None:
        return
    tenant, secret = created
    rule = "=" * 72
    click.echo(
        f"{rule}\nFirst start: created tenant '{tenant.name}' and its first API key (all scopes).\n"
        f"It is shown only this once; store it now:\n\n    FIBRIC_KEY={secret}\n{rule}",
        err=True,
    )


def _apply_at_start(
    state: store.StateStore, controller: loop.Controller, tenant_id: str, config: settings.Settings,
    options: apply.Options,
) -> None:
    folder = config.controller.specs_dir
    try:
        result = watch.apply_folder(state, tenant_id, str(folder), config.controller.apply_set,
                                    options=options)
    except errors.SpecInvalid as e:
        raise edge.SpecFailure(e.problems, f"specs in {folder} are invalid; not serving") from e
    for change in result.changes:
        click.echo(f"{change.kind.lower()}/{change.name} {change.action}", err=True)
        if change.signing_secret:
            click.echo(f"webhook/{change.name} signing secret (shown once): {change.signing_secret}",
                       err=True)
    edge.warn(result.warnings)
    _notify(controller, tenant_id, result)


def _notify(controller: loop.Controller, tenant_id: str, result: apply.ApplyResult) -> None:
    for change in result.changes:
        if change.action != "unchanged":
            controller.notify(tenant_id, change.kind, change.name)


async def _run(
    server: uvicorn.Server,
    state: store.StateStore,
    controller: loop.Controller,
    tenant_id: str | None,
    config: settings.Settings,
    options: apply.Options,
) -> None:
    stop = asyncio.Event()
    watcher: asyncio.Task[None] | None = None
    folder: Path | None = config.controller.specs_dir
    if config.controller.watch and folder is not None and tenant_id is not None:
        watcher = asyncio.create_task(watch.watch_folder(
            state, tenant_id, folder, config.controller.apply_set,
            lambda result: _notify(controller, tenant_id, result), stop,
            options=options,
        ), name="fibric-watch")
    try:
        await server.serve()
    finally:
        stop.set()
        if watcher is not None:
            done, _ = await asyncio.wait([watcher], timeout=WATCH_STOP_TIMEOUT)
            if not done:
                watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher


def _exit_gracefully_on_signals(server: uvicorn.Server) -> None:
    """SIGTERM/SIGINT ask the server to stop, before and after uvicorn's own handlers run.

    uvicorn handles both while serving and re-raises them once it has shut
    down; with these handlers in place that re-raise is harmless, so a
    graceful stop exits 0 instead of dying by the signal.
    """

    def handle(sig: int, frame: FrameType | None) -> Any:
        server.should_exit = True

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
