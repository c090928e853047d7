"""One connector's live side: a supervisor task that keeps one MCP session open.

The supervisor connects, initializes, lists and pins tools, then watches the
session: it re-lists tools when the server announces notifications/tools/
list_changed, pings when idle or after a call timed out, and reconnects when
the session ends. A session that was up is replaced at once, so the call
after a crash gets a fresh session; a server that cannot be reached is
retried with capped exponential backoff (jittered, so a fleet of replicas
does not reconnect in step).

Calls never start or stop sessions: they borrow the current one, wait for
one that is being opened, or fail fast while the supervisor backs off.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.abc

from fibric import errors, specs, threads, timefmt, trust
from fibric.connectors import connector_errors, pinning, session, status, tools, transports

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectorSettings:
    """Timeouts and backoff for every connector of a runtime (seconds)."""

    call_timeout: float = 30.0  # default per-call timeout, waiting for a session included
    connect_timeout: float = 20.0  # start or reach the server, initialize, list tools
    backoff_initial: float = 0.5
    backoff_max: float = 60.0
    backoff_jitter: float = 0.2  # each delay is shortened by up to this fraction
    ping_interval: float = 30.0  # an idle session is pinged this often
    ping_timeout: float = 10.0
    tenant_calls: int = 16  # one tenant's tool calls in flight at once, over all its connectors

    def backoff(self, failures: int, rng: random.Random) -> float:
        """Delay before retry number `failures` (1 = after the first failure)."""
        delay = min(self.backoff_max, self.backoff_initial * 2 ** max(0, failures - 1))
        return delay * (1.0 - self.backoff_jitter * rng.random())


OnChange = Callable[[str, str], None]
SecretLookup = Callable[[str, str], str | None]  # (tenant_id, name) -> value; blocking (a store read)

STABLE_SESSION_SECONDS = 30.0  # a session that lived this long ended by accident, not by design
FLAPS_BEFORE_BACKOFF = 3  # short-lived sessions replaced at once before backoff applies


class Connector:
    """The supervisor and call path of one (tenant, connector name)."""

    def __init__(
        self,
        tenant_id: str,
        name: str,
        spec: specs.models.ConnectorSpec,
        generation: int,
        *,
        pins: pinning.PinStore,
        settings: ConnectorSettings,
        environ: Mapping[str, str],
        grant: trust.Grant,
        pool: threads.Pool,
        resolver: trust.Resolver,
        secrets: SecretLookup | None = None,
        on_change: OnChange | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.name = name
        self.spec = spec
        self.generation = generation
        self.grant = grant  # what it may start, read and reach (fibric.trust.boundary)
        self._pool = pool  # the connectors' threads, for pin and secret reads
        self._resolver = resolver
        self._secrets = secrets
        self._pins = pins
        self._settings = settings
        self._environ = environ
        self._on_change = on_change
        self._rng = rng or random.Random()
        self._phase: status.Phase = "connecting"
        self._session: session.LiveSession | None = None
        self._tools: tuple[tools.ToolInfo, ...] = ()
        self._listed = False
        self._changed: tuple[str, ...] = ()
        self._server: dict[str, Any] = {}
        self._last_synced_at: datetime | None = None
        self._last_error: str | None = None
        self._retry_at: float | None = None  # anyio clock
        self._opened_at = 0.0  # anyio clock, when the current session became usable
        self._changed_event = anyio.Event()
        self._pin_lock = anyio.Lock()
        self._scope: anyio.CancelScope | None = None
        self._done = anyio.Event()

    # --- observed state -----------------------------------------------------

    def state(self) -> status.ConnectorState:
        retry_at = None
        if self._phase == "backoff" and self._retry_at is not None:
            retry_at = timefmt.now() + timedelta(seconds=max(0.0, self._retry_at - anyio.current_time()))
        live = self._session
        last_error = self._last_error
        if live is not None and not live.alive:  # ended; the supervisor has yet to record why
            last_error = live.end_reason
        return status.ConnectorState(
            tenant_id=self.tenant_id,
            name=self.name,
            generation=self.generation,
            transport=transports.describe(self.spec.transport),
            phase=self._phase,
            session_alive=live is not None and live.alive,
            listed=self._listed,
            tools=self._tools,
            capabilities=dict(self.spec.capabilities),
            changed_tools=self._changed,
            server=dict(self._server),
            last_synced_at=self._last_synced_at,
            last_error=self.grant.show_error(last_error),
            retry_at=retry_at,
        )

    async def wait_changed(self, timeout: float) -> None:
        """Return when the observed state next changes, or after `timeout`."""
        with anyio.move_on_after(timeout):
            await self._changed_event.wait()

    def _notify(self) -> None:
        self._changed_event.set()
        self._changed_event = anyio.Event()
        if self._on_change is not None:
            try:
                self._on_change(self.tenant_id, self.name)
            except Exception:
                log.exception("connector %s: on_change callback failed", self.name)

    def update(self, spec: specs.models.ConnectorSpec, generation: int) -> None:
        """A new spec with the same transport: remap capabilities without reconnecting."""
        if spec != self.spec or generation != self.generation:
            self.spec, self.generation = spec, generation
            self._notify()

    # --- supervisor ---------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The supervisor: runs until `stop()`, keeping one session open."""
        try:
            with anyio.CancelScope() as self._scope:
                task_status.started()
                await self._supervise()
        finally:
            self._phase = "stopped"
            self._session = None
            self._done.set()
            self._notify()

    def cancel(self) -> None:
        """Begin stopping: the supervisor closes the session (and a stdio server) and ends."""
        if self._scope is not None:
            self._scope.cancel()

    async def stop(self) -> None:
        """Stop and wait until the session is closed and any server process is gone."""
        self.cancel()
        await self._done.wait()

    async def _supervise(self) -> None:
        failures = 0  # consecutive attempts that ended in backoff: the backoff exponent
        flaps = 0  # consecutive sessions that ended soon after opening
        while True:
            self._phase, self._retry_at = "connecting", None
            self._notify()
            reason = "session ended"
            opened_at: float | None = None
            try:
                await self._connect_and_serve()
            except Exception as e:
                reason = session.describe_error(e)
            finally:
                opened_at = self._opened_at if self._session is not None else None
                self._session = None
            self._last_error = reason
            if opened_at is not None:
                stable = anyio.current_time() - opened_at >= STABLE_SESSION_SECONDS
                flaps = 0 if stable else flaps + 1
                if flaps < FLAPS_BEFORE_BACKOFF:
                    failures = 0
                    log.warning("connector %s: session ended: %s; reconnecting", self.name, reason)
                    continue  # a fresh session at once, for the next call
                # A server that keeps dying right after it opens backs off like one that never opens.
            failures += 1
            delay = self._settings.backoff(failures, self._rng)
            log.warning("connector %s: %s; retry in %.1fs", self.name, reason, delay)
            self._phase, self._retry_at = "backoff", anyio.current_time() + delay
            self._notify()
            await anyio.sleep(delay)

    async def _connect_and_serve(self) -> None:
        """Open, list and serve one session; raises when it cannot open or when it ends."""
        timeout = self._settings.connect_timeout
        token = await self._bearer_token()
        async with (
            transports.open_transport(self.grant, self._environ, token, self._resolver) as link,
            session.open_session(link, self.name, timeout) as live,
        ):
            await self._adopt(await live.list_tools(timeout))
            self._session, self._server, self._phase = live, dict(live.server), "connected"
            self._opened_at = anyio.current_time()
            self._notify()
            await self._serve(live)

    async def _bearer_token(self) -> str | None:
        """The tenant secret the HTTP transport names in bearer_token_ref, read as the session opens."""
        http = self.grant.transport.http
        if http is None or http.bearer_token_ref is None or self._secrets is None:
            return None
        return await self._pool.run(self._secrets, self.tenant_id, http.bearer_token_ref)

    async def _serve(self, live: session.LiveSession) -> None:
        while True:
            with anyio.move_on_after(self._settings.ping_interval) as idle:
                await live.wake.wait()
            live.renew_wake()  # flags are read after renewing, so no poke is lost
            if not live.alive:
                raise session.SessionEnded(live.end_reason)
            if live.refresh_requested:
                live.refresh_requested = False
                await self._adopt(await live.list_tools(self._settings.connect_timeout))
                self._notify()
            if live.check_requested or idle.cancelled_caught:
                live.check_requested = False
                try:
                    await live.ping(self._settings.ping_timeout)
                except Exception as e:
                    raise session.SessionEnded(
                        f"server stopped answering pings: {session.describe_error(e)}"
                    ) from e

    async def _adopt(self, listing: list[tools.ToolInfo]) -> None:
        """Take a tool listing: pin tools seen for the first time, flag changed ones."""
        observed = {t.name: t.pin for t in listing}

        def record_and_load() -> dict[str, str]:
            self._pins.record_new(self.tenant_id, self.name, observed)
            return self._pins.load(self.tenant_id, self.name)

        async with self._pin_lock:
            pinned = await self._pool.run(record_and_load)
            self._tools = tuple(listing)
            self._changed = tuple(pinning.changed_tools(pinned, observed))
            self._listed = True
            self._last_synced_at = timefmt.now()
        if self._changed:
            log.warning("connector %s: tools changed since pinned: %s", self.name, ", ".join(self._changed))

    # --- pins ----------------------------------------------------------------

    async def acknowledge(self) -> None:
        """Accept the tool definitions last listed as the new pins."""
        async with self._pin_lock:
            if not self._listed:
                raise errors.Conflict(
                    f"connector {self.name} has not listed its tools yet; nothing to acknowledge"
                )
            observed = {t.name: t.pin for t in self._tools}
            await self._pool.run(self._pins.acknowledge, self.tenant_id, self.name, observed)
            self._changed = ()
        self._notify()

    async def recheck_pins(self) -> None:
        """Re-read pins (another replica may have acknowledged) and re-flag changed tools."""
        if not self._listed:
            return
        async with self._pin_lock:
            pinned = await self._pool.run(self._pins.load, self.tenant_id, self.name)
            changed = tuple(pinning.changed_tools(pinned, {t.name: t.pin for t in self._tools}))
        if changed != self._changed:
            self._changed = changed
            self._notify()

    # --- calls ---------------------------------------------------------------

    def resolve(self, capability: str) -> tools.Binding:
        """The tool behind `capability`, from the last listing; fails closed."""
        with self._as_the_tenant_sees_it():
            return self._resolve(capability)

    def _resolve(self, capability: str) -> tools.Binding:
        tool_name = self.spec.capabilities.get(capability)
        if tool_name is None:
            raise connector_errors.CapabilityUnavailable(
                f"connector {self.name} does not map capability '{capability}'"
            )
        if not self._listed:
            raise connector_errors.NotConnected(
                f"connector {self.name} has not listed its tools yet ({self._last_error or self._phase})",
                delay=self._retry_delay(),
            )
        tool = next((t for t in self._tools if t.name == tool_name), None)
        if tool is None:
            raise connector_errors.CapabilityUnavailable(
                f"connector {self.name}: capability '{capability}' maps to tool '{tool_name}', "
                "which the server does not offer"
            )
        return tools.Binding(self.tenant_id, self.name, capability, tool, bool(self._changed))

    async def call(
        self,
        capability: str,
        arguments: dict[str, Any],
        idempotency_key: str | None,
        *,
        entity_key: str | None = None,
        timeout: float | None = None,
        started: float | None = None,
    ) -> tools.ToolResult:
        """tools/call for `capability` on the shared session; see fibric.connectors.connector_errors.

        The call has `timeout` seconds from `started` (anyio's clock; default now), waiting
        for a session included."""
        if capability not in self.spec.capabilities:
            raise connector_errors.CapabilityUnavailable(
                f"connector {self.name} does not map capability '{capability}'"
            )
        budget = self._settings.call_timeout if timeout is None else timeout
        deadline = (anyio.current_time() if started is None else started) + budget
        with self._as_the_tenant_sees_it():
            live = await self._acquire(deadline)
            binding = self._resolve(capability)  # against the listing of the session we hold
            meta: dict[str, Any] = {}
            if idempotency_key is not None:
                meta[tools.IDEMPOTENCY_META_KEY] = idempotency_key
            if entity_key is not None:
                meta[tools.ENTITY_META_KEY] = entity_key
            remaining = max(0.001, deadline - anyio.current_time())
            result = await live.call(binding.tool.name, arguments, meta, remaining, budget=budget)
        return tools.ToolResult.from_mcp(self.name, binding.tool.name, result)

    @contextlib.contextmanager
    def _as_the_tenant_sees_it(self) -> Iterator[None]:
        """Errors leave a connector's call path only as its grant lets the tenant read them.

        What a call or resolve raises ends up in receipts, run statuses and API
        errors, all of which the tenant reads: this is the one place the grant's
        disclosure (the target's words withheld or cut) applies to them, as
        `state()` applies it to the status. The full text goes to the server log.
        """
        try:
            yield
        except errors.FibricError as e:
            shown = self.grant.show_error(str(e)) or ""
            if shown == str(e):
                raise
            log.warning("connector %s (tenant %s): %s", self.name, self.tenant_id, e)
            raise connector_errors.retold(e, shown) from None

    async def _acquire(self, deadline: float) -> session.LiveSession:
        """The live session, waiting while one is being opened (never while backing off)."""
        while True:
            live = self._session
            if live is not None and live.alive:
                return live
            if self._phase == "stopped":
                raise connector_errors.NotConnected(f"connector {self.name} is not running", delay=1.0)
            if self._phase == "backoff":
                delay = self._retry_delay()
                raise connector_errors.NotConnected(
                    f"connector {self.name} is disconnected ({self._last_error}); "
                    f"next attempt in {delay:.1f}s",
                    delay=delay,
                )
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                raise connector_errors.NotConnected(f"connector {self.name} is still connecting", delay=1.0)
            await self.wait_changed(remaining)

    def _retry_delay(self) -> float:
        if self._retry_at is None:
            return 1.0
        return max(0.0, self._retry_at - anyio.current_time())
