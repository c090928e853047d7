"""`fibric serve`: the API and the controller in one process, on one event loop.

uvicorn's `Server.serve()` runs inside our own `asyncio.run`, so the folder
watcher (`--specs DIR --watch`) runs beside it as a task; the controller
runs in the app's lifespan, and with it the MCP connector runtime (stdio
servers start in this process's working directory unless a spec sets cwd).
SIGTERM and SIGINT shut down gracefully: uvicorn stops taking requests and
drains, the lifespan stops the controller (and every MCP server), the
watcher stops, and the store is closed; the exit code is 0. Whatever is in
flight, the process is gone within FIBRIC_SHUTDOWN_SECONDS (BoundedServer).

At start it logs one line saying what it runs with (`banner`), so a log
answers "which store, ledger and engine was this?"; no URL in it keeps its
credentials. A webhook the specs folder creates gets a signing secret that
is never logged: it goes to a 0600 file in the data dir, and the log says where.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import click
import uvicorn

import fibric
from fibric import errors, logs, policies, proposers, settings, store, system, threads, tracing, trust
from fibric.api import protocol, workers
from fibric.cli import edge
from fibric.controller import applier, bootstrap, loop, watch
from fibric.policies import embedded, zygote
from fibric.store import filemodes, sealed

log = logging.getLogger("fibric.serve")
WATCH_STOP_TIMEOUT = 5.0
GIVE_UP_SECONDS = 0.5  # the most the watchdog spends stopping the policy processes before it exits
SECRETS_DIR = "secrets"  # in the data dir: one 0600 file per webhook secret `--specs` created


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
    API key (all scopes) once, on stderr. A webhook the --specs folder creates
    gets a signing secret, written to DATA_DIR/secrets/ (mode 0600), never to
    the log. Every setting, with its FIBRIC_* variable: docs/configuration.md.
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
    try:
        traces = tracing.configure(os.environ)  # OTEL_EXPORTER_OTLP_ENDPOINT: spans to a collector
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    opened = False
    try:
        with contextlib.ExitStack() as stop_tracing:
            stop_tracing.callback(tracing.shutdown)  # the last spans reach the collector before exit
            with system.build(config, boundary=boundary) as running:
                opened = True
                _serve(running, tenant_name, traces)
    except store.OPEN_ERRORS as e:
        if opened:
            raise
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)  # an unusable data dir
        raise edge.Failure(f"cannot open the state store at {config.store.location}: {reason}") from e
    except ValueError as e:
        if opened:
            raise
        raise click.UsageError(str(e)) from e  # FIBRIC_OPA_TOKEN_ENV unset, a bad crashpoint, ...
    except errors.FibricError as e:
        if opened:
            raise
        raise edge.Failure(str(e)) from e  # a data dir that cannot be used: an old ledger to import, ...


def _serve(running: system.System, tenant_name: str, traces: str | None = None) -> None:
    """Bootstrap, apply the spec folder, and serve until a signal; the system is closed by the caller."""
    config, state = running.settings, running.state
    log.info("%s", banner(config, traces))
    _bootstrap(state, config)
    options = applier.Options(running.boundary, running.box)
    tenant = None
    if config.controller.specs_dir is not None:
        tenant = state.get_tenant(tenant_name)
        _apply_at_start(state, running.controller, tenant, config, options)
    bound = config.bulkheads.shutdown_seconds
    server = BoundedServer(uvicorn.Config(
        running.app, host=config.server.host, port=config.server.port, lifespan="on",
        timeout_graceful_shutdown=max(1, int(bound / 2)),  # requests in flight; then the lifespan
        http=protocol.FibricH11Protocol, h11_max_incomplete_event_size=protocol.MAX_HEADER_BYTES,
        log_config=None, access_log=False,  # uvicorn logs through ours; fibric.access is the access log
    ), bound, on_give_up=lambda: stop_policy_processes(running.engine))
    _exit_gracefully_on_signals(server)
    asyncio.run(_run(server, state, running.controller, tenant, config, options, running.pools))


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
    state: store.StateStore, controller: loop.Controller, tenant: store.Tenant, config: settings.Settings,
    options: applier.Options,
) -> None:
    folder = config.controller.specs_dir
    try:
        result = watch.apply_folder(state, tenant.id, str(folder), config.controller.apply_set,
                                    options=options)
    except errors.SpecInvalid as e:
        raise edge.SpecFailure(e.problems, f"specs in {folder} are invalid; not serving") from e
    for change in result.changes:
        click.echo(f"{change.kind.lower()}/{change.name} {change.action}", err=True)
    edge.warn(result.warnings)
    _applied(controller, tenant, config, result)


def _applied(controller: loop.Controller, tenant: store.Tenant, config: settings.Settings,
             result: applier.ApplyResult) -> None:
    """After the folder was applied: keep new webhooks' secrets, and wake the controller for what changed."""
    for change in result.changes:
        if change.signing_secret:
            _keep_secret(config, tenant, change)
        if change.action != "unchanged":
            controller.notify(tenant.id, change.kind, change.name)


def _keep_secret(config: settings.Settings, tenant: store.Tenant, change: applier.Change) -> None:
    """Write a new webhook's signing secret to a 0600 file in the data dir; log where, never what."""
    path = config.store.data_dir.absolute() / SECRETS_DIR / f"webhook-{tenant.name}-{change.name}.secret"
    try:
        filemodes.make_private_dir(path.parent)
        filemodes.create_private_file(path)  # one already there (a webhook made again) keeps its mode
        path.write_text(change.signing_secret or "", encoding="utf-8")
    except OSError as e:
        log.error("webhook/%s: a signing secret was created, but it cannot be written to %s (%s); rotate "
                  "it to get one: POST /v1/webhooks/%s/rotate_secret", change.name, path, e.strerror or e,
                  change.id)
        return
    log.info("webhook/%s: a signing secret was created and written to %s (mode 0600); it is not shown "
             "anywhere else", change.name, path)


def banner(config: settings.Settings, traces: str | None = None) -> str:
    """One line saying what this server runs with: version, store, ledger, policy engine, address, limits.

    Every URL and connection string in it has lost its user, password and
    query (which may carry a password too): it is logged.
    """
    stored, rules, limits, pools = config.store, config.policies, config.rate_limits, config.bulkheads
    data_dir = stored.data_dir.absolute()
    catalog = stored.ledger_catalog or str(data_dir / sealed.CATALOG_FILE)
    shown: dict[str, object] = {
        "store": _without_credentials(stored.url) if stored.url else f"sqlite:{data_dir / 'state.db'}",
        "ledger": f"ducklake:{_without_credentials(catalog)}",
        "ledger_data": _without_credentials(stored.ledger_data_path or str(data_dir / sealed.DATA_DIR)),
    }
    if stored.ledger_schema:
        shown["ledger_schema"] = stored.ledger_schema
    if rules.engine == "opa":
        shown["policy_engine"] = f"opa:{_without_credentials(rules.url or '')}"
    else:
        shown["policy_engine"] = "embedded"
        shown["policy_workers"] = rules.workers or embedded.default_workers()
    shown |= {
        "policy_timeout_ms": rules.timeout_ms,
        "listen": f"{config.server.host}:{config.server.port}",
        "max_body_bytes": config.server.max_body_bytes,
        "rate_limits": f"reads:{limits.reads_per_minute},writes:{limits.writes_per_minute},"
                       f"events:{limits.events_per_minute}/min",
        "rate_counters": _without_credentials(limits.redis_url) if limits.redis_url else "process",
        "api_threads": config.server.worker_threads or workers.default_threads(
            "postgresql" if stored.url else "sqlite"),
        "pools": ",".join(f"{name}:{size}" for name, size in pools.pool_sizes.items()),
        "slow_threads": config.server.slow_threads,
        "tenant_caps": f"deliveries:{pools.tenant_deliveries},connector_calls:{pools.tenant_connector_calls},"
                       f"runs:{pools.tenant_runs}",
        "process_caps": f"deliveries:{config.webhooks.concurrency},runs:{pools.run_concurrency}",
        "traces": f"otlp:{_without_credentials(traces)}" if traces else "off",
    }
    return f"fibric {fibric.__version__}: " + " ".join(f"{key}={shlex.quote(str(value))}"
                                                        for key, value in shown.items())


def _without_credentials(location: str) -> str:
    """A URL or libpq connection string ("host=db dbname=x password=..."), without what may be secret.

    A URL keeps its scheme, host, port and path; a connection string its
    host, hostaddr, port and dbname. Anything else (a path) is left as it is.
    """
    prefix, _, rest = location.partition(":")
    if prefix == "postgres" and not rest.startswith("//"):  # DuckLake's "postgres:<connection string>"
        return f"postgres:{_without_credentials(rest)}"
    if "://" in location:
        parts = urlsplit(location)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        try:
            port = f":{parts.port}" if parts.port else ""
        except ValueError:  # a port that is not a number: not shown
            port = ""
        return f"{parts.scheme}://{host}{port}{parts.path}"
    if "=" in location:
        try:
            pairs = [word.partition("=") for word in shlex.split(location)]
        except ValueError:  # unbalanced quotes: show nothing of it
            return "(a connection string)"
        return " ".join(f"{key}={value}" for key, _, value in pairs
                        if key in ("host", "hostaddr", "port", "dbname"))
    return location


async def _run(
    server: uvicorn.Server,
    state: store.StateStore,
    controller: loop.Controller,
    tenant: store.Tenant | None,
    config: settings.Settings,
    options: applier.Options,
    pools: threads.Pools,
) -> None:
    # Our own work names its pool; this small one is for what libraries submit on their own
    # (psycopg resolving PostgreSQL's host), so it can never queue behind or before ours.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(2, thread_name_prefix="fibric-library"))
    stop = asyncio.Event()
    watcher: asyncio.Task[None] | None = None
    folder: Path | None = config.controller.specs_dir
    if config.controller.watch and folder is not None and tenant is not None:
        watcher = asyncio.create_task(watch.watch_folder(
            state, tenant.id, folder, config.controller.apply_set,
            lambda result: _applied(controller, tenant, config, result), stop,
            options=options, pool=pools.controller, self_heal=config.controller.sync_self_heal,
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


class BoundedServer(uvicorn.Server):
    """uvicorn's server, whose first stop signal also starts a watchdog: the process ends within `bound`.

    The signal asks uvicorn to stop (it drains requests, then the lifespan
    stops the controller, its connectors and services). If that has not
    ended the process `bound` seconds later (a tool call that never answers,
    a thread stuck in a driver), the process exits anyway: what it left
    mid-way is recovery's to finish (leases expire, intents are resumed;
    docs/executor.md#crash-safety, docs/operations.md#shutdown). Before it
    exits it calls `on_give_up` (the policy processes are killed), for at
    most GIVE_UP_SECONDS.
    """

    def __init__(self, config: uvicorn.Config, bound: float,
                 on_give_up: Callable[[], object] | None = None) -> None:
        super().__init__(config)
        self.bound = bound
        self._on_give_up = on_give_up
        self._watchdog: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.start_watchdog()
        super().handle_exit(sig, frame)

    def start_watchdog(self) -> None:
        if self._watchdog is None:
            self._watchdog = threading.Timer(self.bound, self._give_up)
            self._watchdog.daemon = True
            self._watchdog.start()

    def _give_up(self) -> None:
        log.warning("shutdown took longer than %gs (FIBRIC_SHUTDOWN_SECONDS); exiting with work in "
                    "flight, which recovery will finish", self.bound)
        if self._on_give_up is not None:  # on a thread of its own: nothing it waits on can keep us here
            last = threading.Thread(target=self._on_give_up, name="fibric-give-up", daemon=True)
            last.start()
            last.join(GIVE_UP_SECONDS)
        logging.shutdown()
        os._exit(0)


def stop_policy_processes(engine: policies.Engine) -> None:
    """Kill the embedded engine's workers, zygote and forkserver now: the process is exiting without
    closing the engine, and they must not outlive it (zygote.kill_now)."""
    if isinstance(engine, policies.EmbeddedEngine):
        killed = zygote.kill_now(engine.processes())
        log.warning("killed the policy engine's %d processes (workers, zygote, forkserver)", len(killed))


def _exit_gracefully_on_signals(server: BoundedServer) -> None:
    """SIGTERM/SIGINT stop the server (within its bound), before and after uvicorn's own handlers run.

    uvicorn handles both while serving and re-raises them once it has shut
    down; with these handlers in place that re-raise is harmless, so a
    graceful stop exits 0 instead of dying by the signal.
    """

    def handle(sig: int, frame: FrameType | None) -> Any:
        server.start_watchdog()
        server.should_exit = True

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def _configure_logging() -> None:
    """Text or JSON lines on stderr (FIBRIC_LOG_FORMAT, fibric/logs.py), uvicorn's loggers included."""
    try:
        logs.configure(logs.LogSettings.from_env(os.environ))
    except ValueError as e:
        raise click.UsageError(str(e)) from e
