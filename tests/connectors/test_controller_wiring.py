"""The controller driving a real connector runtime: an applied Connector becomes a live MCP session.

A Controller owns a ConnectorRuntime backed by the SQL pin store, against a
real state store (both backends), and the example order server runs over
stdio as an entry of the installation's connector catalog, which the
tenant's Connector names. What a user relies on: the stored status (and the API) says
`connected` with the server's tools, tool pins land in the database, a
changed tool is flagged until `POST /v1/connectors/{id}/ack`, and deleting
the Connector stops it and forgets its pins. Every wait is bounded.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from connector_support import FAST, ORDERS_SERVER, WAIT

from fibric import connectors, errors, settings, specs, store, trust
from fibric.api import create_app
from fibric.controller import applier, loop
from fibric.store import pin_store

pytestmark = pytest.mark.anyio

NAME = "magento"


CONNECTOR = f"""\
apiVersion: fibric.io/v1
kind: Connector
metadata: {{name: {NAME}}}
spec:
  display_name: Magento Orders
  transport: {{catalog: orders}}
  capabilities: {{orders.read: orders.read, orders.hold: orders.hold, orders.notify: orders.notify}}
"""


def boundary(db: Path) -> trust.Boundary:
    """The installation's catalog: the example order server, the only command a tenant may name."""
    # JSON strings are YAML strings, so any temporary path is quoted safely.
    catalog = trust.Catalog.parse(f"""\
connectors:
  orders:
    stdio:
      command: {json.dumps(sys.executable)}
      args: [{json.dumps(str(ORDERS_SERVER))}]
      env: {{ORDERS_DB: {json.dumps(str(db))}}}
""", "catalog.yaml")
    return trust.Boundary(catalog=catalog)


@pytest.fixture
async def controller(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path
) -> AsyncIterator[loop.Controller]:
    """A running controller with a runtime, and the example Connector applied and notified."""
    runtime = connectors.ConnectorRuntime(
        pin_store.SQLPinStore(state), FAST,
        on_change=lambda tenant_id, name: running.notify(tenant_id, "Connector", name),
    )
    installation = boundary(tmp_path / "orders.db")
    running = loop.Controller(
        state, settings.ControllerSettings(resync_seconds=3600), connectors=runtime,
        stop_timeout_seconds=WAIT, boundary=installation,
    )
    result = applier.apply(state, tenant.id, specs.load_text(CONNECTOR),
                           options=applier.Options(installation))
    await running.start()
    try:
        for change in result.changes:
            running.notify(tenant.id, change.kind, change.name)
        yield running
    finally:
        with anyio.fail_after(WAIT + 5):
            await running.stop()


async def stored_status(
    state: store.StateStore, tenant_id: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll the stored status until `check` holds (the controller writes it; nothing to wait on)."""
    with anyio.fail_after(WAIT):
        while True:
            obj = await anyio.to_thread.run_sync(state.get_object, tenant_id, "Connector", NAME)
            if check(obj.status):
                return obj.status
            await anyio.sleep(0.05)


def api(state: store.StateStore, secret: str, controller: Any | None) -> httpx.AsyncClient:
    app = create_app(settings.Settings(), state, controller)  # no lifespan over ASGI: never started twice
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fibric.test",
                             headers={"Authorization": f"Bearer {secret}"})


def connected(status: dict[str, Any]) -> bool:
    return status.get("connection") == "connected"


async def test_applied_connector_connects_and_the_api_shows_its_tools(
    controller: loop.Controller, state: store.StateStore, tenant: store.Tenant
) -> None:
    status = await stored_status(state, tenant.id, connected)
    assert status["tools"] == [
        {"name": "orders.read", "side_effect": False},
        {"name": "orders.hold", "side_effect": True},
        {"name": "orders.notify", "side_effect": True},
    ]
    assert status["last_synced_at"] is not None and status["last_synced_at"].endswith("Z")
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    pinned = pin_store.SQLPinStore(state).load(tenant.id, NAME)
    assert pinned == status["tool_hashes"] and len(pinned) == 3

    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    async with api(state, secret, None) as client:
        response = await client.get(f"/v1/connectors/cn_{NAME}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["tools"], body["last_synced_at"]) == (
        "connected", status["tools"], status["last_synced_at"])


async def test_changed_tool_is_flagged_until_acknowledged_through_the_api(
    controller: loop.Controller, state: store.StateStore, tenant: store.Tenant
) -> None:
    status = await stored_status(state, tenant.id, connected)
    # A pin that no longer matches what the server lists: what a rewritten (poisoned) tool looks like.
    pin_store.SQLPinStore(state).acknowledge(tenant.id, NAME, {"orders.read": "0" * 64})
    controller.notify(tenant.id, "Connector", NAME)  # the runtime re-reads pins on ensure
    flagged = await stored_status(state, tenant.id, lambda s: s.get("connection") == "degraded")
    assert flagged["changed_tools"] == ["orders.read"] and flagged["tool_changed"] is True

    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    async with api(state, secret, controller) as client:
        response = await client.post(f"/v1/connectors/cn_{NAME}/ack")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "connected"  # recorded before the route answered
        other = await client.post("/v1/connectors/cn_nope/ack")
        assert other.status_code == 404, other.text
    assert pin_store.SQLPinStore(state).load(tenant.id, NAME) == status["tool_hashes"]


async def test_ack_without_a_runtime_pins_what_the_status_shows(
    controller: loop.Controller, state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant
) -> None:
    status = await stored_status(state, tenant.id, connected)
    pins = pin_store.SQLPinStore(state)
    pins.acknowledge(tenant.id, NAME, {"orders.read": "0" * 64})
    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    async with api(state, secret, None) as client:
        response = await client.post(f"/v1/connectors/cn_{NAME}/ack")
    assert response.status_code == 200, response.text
    assert pins.load(tenant.id, NAME) == status["tool_hashes"]

    _, stranger = state.create_api_key(other_tenant.id, frozenset(store.SCOPES))
    async with api(state, stranger, None) as client:
        response = await client.post(f"/v1/connectors/cn_{NAME}/ack")
    assert response.status_code == 404, response.text


async def test_deleting_the_connector_stops_it_and_forgets_its_pins(
    controller: loop.Controller, state: store.StateStore, tenant: store.Tenant
) -> None:
    await stored_status(state, tenant.id, connected)
    runtime = controller.connectors
    assert runtime is not None and runtime.names(tenant.id) == [NAME]
    change = applier.delete(state, tenant.id, "Connector", NAME)
    controller.notify(tenant.id, change.kind, change.name)
    pins = pin_store.SQLPinStore(state)
    with anyio.fail_after(WAIT):  # the runtime stops the server first, then forgets the pins
        while runtime.names(tenant.id) or await anyio.to_thread.run_sync(pins.load, tenant.id, NAME):
            await anyio.sleep(0.05)
    with pytest.raises(errors.NotFound):
        runtime.state(tenant.id, NAME)
