"""The connector runtime: every tenant's live connectors, owned by the controller.

The controller reconciles Connector objects into it (`ensure`, `remove`),
writes what it reports (`state(...).status(previous)`) into each object's
status, and the executor calls capabilities through it (`resolve` for the
policy input, then `call`). It is an async context manager because each
connector's supervisor is a task in its task group: leaving the block stops
every session and every stdio server, shielded, so nothing leaks.

Connectors are keyed by (tenant id, connector name) and a capability is
only ever resolved among the calling tenant's connectors.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import anyio
import anyio.abc

from fibric import errors, specs, threads, trust
from fibric import metrics as metrics_module
from fibric.connectors import connector as connectors
from fibric.connectors import connector_errors, pinning, tools
from fibric.connectors import status as states


class ConnectorRuntime:
    """Live MCP connectors, one supervisor task and one shared session each."""

    def __init__(
        self,
        pins: pinning.PinStore,
        settings: connectors.ConnectorSettings | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        secrets: connectors.SecretLookup | None = None,
        on_change: connectors.OnChange | None = None,
        rng: random.Random | None = None,
        pool: threads.Pool | None = None,
        resolver: trust.Resolver | None = None,
        metrics: metrics_module.Metrics | None = None,
    ) -> None:
        """`environ` is the installation's environment, read for a stdio PATH and `bearer_token_env`
        only where a connector's grant allows (default: this process's, copied now);
        `secrets(tenant_id, name)` opens a tenant secret for `bearer_token_ref` (blocking);
        `on_change(tenant_id, name)` is called on the event loop whenever a connector's
        observed state changes, so the controller can requeue it: keep it cheap.
        `pool` runs the blocking pin and secret reads (the system's connectors pool);
        `resolver` resolves HTTP connectors' hosts (the installation's DNS settings);
        `metrics` times the tool calls."""
        self._metrics = metrics or metrics_module.Metrics()
        self._pins = pins
        self._settings = settings or connectors.ConnectorSettings()
        self._environ = dict(os.environ if environ is None else environ)
        self._secrets = secrets
        self._pool = pool or threads.standalone("connectors")
        self._resolver = resolver or trust.Resolver()
        self._tenant_calls: dict[str, anyio.Semaphore] = {}
        self._on_change = on_change
        self._rng = rng or random.Random()
        self._tenants: dict[str, dict[str, connectors.Connector]] = {}
        self._locks: dict[tuple[str, str], anyio.Lock] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> ConnectorRuntime:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        tg, self._tg = self._tg, None
        if tg is None:
            return None
        for by_name in self._tenants.values():
            for item in by_name.values():
                item.cancel()  # each supervisor stops its own server, shielded, concurrently
        self._tenants.clear()
        return await tg.__aexit__(exc_type, exc, tb)

    # --- desired state (the controller) ----------------------------------------

    async def ensure(
        self, tenant_id: str, name: str, spec: specs.models.ConnectorSpec, generation: int = 1,
        *, grant: trust.Grant | None = None,
    ) -> states.ConnectorState:
        """Make the connector run with this spec; idempotent, cheap when nothing changed.

        `grant` is what it may start, read and reach, as `trust.Boundary.grant`
        decided from who wrote the spec (the controller always passes one);
        without it the runtime trusts its caller with the spec's own transport.
        A new transport or grant restarts the session; a changed capability
        map or display field applies in place. Also re-reads the tool pins, so
        an acknowledgement made by another replica clears ToolsChanged here.
        """
        if self._tg is None:
            raise RuntimeError("use the runtime inside `async with`")
        if grant is None:
            if spec.transport.catalog is not None:
                raise trust.NotPermitted("a catalog connector runs with the grant its boundary resolves")
            grant = trust.Grant.trusted(spec.transport)
        async with self._lock(tenant_id, name):
            current = self._tenants.get(tenant_id, {}).get(name)
            if current is not None and current.spec.transport == spec.transport and current.grant == grant:
                current.update(spec, generation)
                await current.recheck_pins()
                return current.state()
            if current is not None:
                await current.stop()
            item = connectors.Connector(
                tenant_id,
                name,
                spec,
                generation,
                pins=self._pins,
                settings=self._settings,
                environ=self._environ,
                grant=grant,
                pool=self._pool,
                resolver=self._resolver,
                secrets=self._secrets,
                on_change=self._on_change,
                rng=self._rng,
            )
            self._tenants.setdefault(tenant_id, {})[name] = item
            await self._tg.start(item.run)
            return item.state()

    async def remove(self, tenant_id: str, name: str, *, forget_pins: bool = True) -> None:
        """Stop a connector whose object was deleted, and (by default) drop its pins."""
        async with self._lock(tenant_id, name):
            item = self._tenants.get(tenant_id, {}).pop(name, None)
            if item is not None:
                await item.stop()
            if forget_pins:
                await self._pool.run(self._pins.forget, tenant_id, name)

    def names(self, tenant_id: str) -> list[str]:
        return sorted(self._tenants.get(tenant_id, {}))

    def state(self, tenant_id: str, name: str) -> states.ConnectorState:
        return self._get(tenant_id, name).state()

    def status(self, tenant_id: str, name: str, previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The status document to store; `previous` keeps condition transition times."""
        return self.state(tenant_id, name).status(previous)

    async def wait_for(
        self,
        tenant_id: str,
        name: str,
        predicate: Callable[[states.ConnectorState], bool],
        timeout: float,
    ) -> states.ConnectorState:
        """Wait until the connector's state satisfies `predicate`; TimeoutError after `timeout`."""
        with anyio.fail_after(timeout):
            while True:
                item = self._get(tenant_id, name)
                current = item.state()
                if predicate(current):
                    return current
                await item.wait_changed(timeout)

    async def ack(self, tenant_id: str, name: str) -> states.ConnectorState:
        """Accept the tools the server lists now as pinned (`fibric connector ack NAME`)."""
        item = self._get(tenant_id, name)
        await item.acknowledge()
        return item.state()

    # --- calls (the executor, operators' sense step) -------------------------------

    def resolve(self, tenant_id: str, capability: str, connector: str | None = None) -> tools.Binding:
        """The connector and tool behind a capability, for the policy input; fails closed."""
        return self._provider(tenant_id, capability, connector).resolve(capability)

    async def call(
        self,
        tenant_id: str,
        capability: str,
        arguments: dict[str, Any],
        idempotency_key: str | None,
        *,
        connector: str | None = None,
        entity_key: str | None = None,
        timeout: float | None = None,
    ) -> tools.ToolResult:
        """Call the tool behind `capability`; the idempotency key travels in the request's _meta.

        Raises the errors of `fibric.connectors.connector_errors`; a tool's own failure
        comes back as a result with `is_error` set, not as an exception.
        """
        item = self._provider(tenant_id, capability, connector)
        budget = self._settings.call_timeout if timeout is None else timeout
        started = anyio.current_time()
        gate = self._tenant_gate(tenant_id)
        with anyio.move_on_after(budget) as waiting:  # only the wait for a slot: never a sent call
            await gate.acquire()
        if waiting.cancelled_caught:
            raise connector_errors.TenantBusy(
                f"tenant {tenant_id} had {self._settings.tenant_calls} tool calls in flight for {budget:g}s; "
                "this one was not sent", delay=1.0)
        sent = anyio.current_time()
        result: tools.ToolResult | None = None
        try:
            result = await item.call(capability, arguments, idempotency_key, entity_key=entity_key,
                                     timeout=budget, started=started)
            return result
        finally:
            gate.release()
            self._metrics.tool_called(tenant_id, item.name, _result_label(result),
                                      anyio.current_time() - sent)

    # --- helpers ----------------------------------------------------------------

    def _get(self, tenant_id: str, name: str) -> connectors.Connector:
        item = self._tenants.get(tenant_id, {}).get(name)
        if item is None:
            raise errors.NotFound(f"no connector '{name}' is running for this tenant")
        return item

    def _provider(self, tenant_id: str, capability: str, connector: str | None) -> connectors.Connector:
        if connector is not None:
            item = self._get(tenant_id, connector)
            if capability not in item.spec.capabilities:
                raise connector_errors.CapabilityUnavailable(
                    f"connector {connector} does not map capability '{capability}'"
                )
            return item
        found = [c for c in self._tenants.get(tenant_id, {}).values() if capability in c.spec.capabilities]
        if not found:
            raise connector_errors.CapabilityUnavailable(f"no connector maps capability '{capability}'")
        if len(found) > 1:
            names = ", ".join(sorted(c.name for c in found))
            raise connector_errors.CapabilityUnavailable(
                f"capability '{capability}' is mapped by several connectors ({names}); name one"
            )
        return found[0]

    def _tenant_gate(self, tenant_id: str) -> anyio.Semaphore:
        """The tenant's share of calls in flight: a tenant whose server hangs cannot take the others'."""
        gate = self._tenant_calls.get(tenant_id)
        if gate is None:
            gate = self._tenant_calls[tenant_id] = anyio.Semaphore(max(1, self._settings.tenant_calls))
        return gate

    def _lock(self, tenant_id: str, name: str) -> anyio.Lock:
        return self._locks.setdefault((tenant_id, name), anyio.Lock())


def _result_label(result: tools.ToolResult | None) -> str:
    """ok; tool_error: the tool answered with an error; error: no answer (raised, timed out, cancelled)."""
    if result is None:
        return "error"
    return "tool_error" if result.is_error else "ok"
