"""The wall holds at run time too: a stored connector runs only with what its writer may use.

A real controller and connector runtime over a real store. Rows a tenant
wrote before the boundary existed (inserted here straight into the store)
never start a process, read a server variable or reach loopback, whatever
they say; an allowed HTTP connector gets its bearer token from a tenant
secret, reconnects when the secret changes, and a private target's error
text never reaches the tenant.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from orders_system import HttpOrders
from trust_support import connector

from fibric import connectors, settings, specs, store, trust
from fibric.api import create_app
from fibric.controller import applier, loop
from fibric.store import pin_store, secretbox, vault

pytestmark = pytest.mark.anyio
WAIT = 30.0
FAST = connectors.ConnectorSettings(call_timeout=10.0, connect_timeout=10.0, backoff_initial=0.05,
                                    backoff_max=0.3, backoff_jitter=0.0, ping_interval=5.0, ping_timeout=5.0)


@dataclass
class Running:
    controller: loop.Controller
    runtime: connectors.ConnectorRuntime
    box: secretbox.SecretBox
    boundary: trust.Boundary


@pytest.fixture
def box() -> secretbox.SecretBox:
    return secretbox.SecretBox(key=secretbox.new_key())


@pytest.fixture
async def running(state: store.StateStore, box: secretbox.SecretBox) -> AsyncIterator[Running]:
    """A controller with a connector runtime; the installation allows loopback (the test servers)."""
    boundary = trust.Boundary(egress=trust.Egress.parse(["127.0.0.1"]))
    environ = {"HOME": "/root", "PATH": "/usr/bin:/bin", "TOKEN": "server-only"}
    runtime = connectors.ConnectorRuntime(
        pin_store.SQLPinStore(state), FAST, environ=environ,
        secrets=lambda tenant_id, name: vault.reveal(state, box, tenant_id, name),
        on_change=lambda tenant_id, name: controller.notify(tenant_id, "Connector", name),
    )
    controller = loop.Controller(state, settings.ControllerSettings(resync_seconds=3600),
                                 connectors=runtime, stop_timeout_seconds=WAIT, boundary=boundary)
    await controller.start()
    try:
        yield Running(controller, runtime, box, boundary)
    finally:
        with anyio.fail_after(WAIT + 5):
            await controller.stop()


def insert(state: store.StateStore, tenant: store.Tenant, document: dict[str, Any]) -> store.StoredObject:
    """Write a spec straight into the store as a tenant row, skipping apply's checks (a legacy row)."""
    doc = specs.validate_data(document)
    with state.tenant_transaction(tenant.id) as tx:
        return tx.insert(doc.kind, doc.name, doc.spec_dict(), {})  # type: ignore[attr-defined]


async def status_of(state: store.StateStore, tenant: store.Tenant, name: str,
                    check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    with anyio.fail_after(WAIT):
        while True:
            obj = await anyio.to_thread.run_sync(state.get_object, tenant.id, "Connector", name)
            if check(obj.status):
                return obj.status
            await anyio.sleep(0.05)


def ready(status: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})


@pytest.fixture
def listener() -> Iterator[tuple[int, list[str]]]:
    """A loopback TCP port that records every connection made to it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.1)
    seen: list[str] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, address = server.accept()
            except OSError:
                continue
            seen.append(str(address))
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], seen
    stop.set()
    thread.join(timeout=5)
    server.close()


async def test_a_legacy_tenant_row_with_a_command_never_starts_it(
    state: store.StateStore, tenant: store.Tenant, running: Running, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    insert(state, tenant, connector("evil", {"stdio": {"command": "sh", "args": ["-c", f"touch {marker}"]}}))
    running.controller.notify(tenant.id, "Connector", "evil")
    status = await status_of(state, tenant, "evil", lambda s: ready(s).get("reason") == "NotPermitted")
    assert status["connection"] == "disconnected" and "may not start a process" in status["last_error"]
    await anyio.sleep(0.5)
    assert not marker.exists()
    assert running.runtime.names(tenant.id) == []


async def test_a_legacy_tenant_row_never_reads_a_server_variable(
    state: store.StateStore, tenant: store.Tenant, running: Running, listener: tuple[int, list[str]]
) -> None:
    port, seen = listener
    insert(state, tenant, connector("env", {"http": {"url": f"http://127.0.0.1:{port}/mcp",
                                                     "bearer_token_env": "TOKEN"}}))
    running.controller.notify(tenant.id, "Connector", "env")
    status = await status_of(state, tenant, "env", lambda s: ready(s).get("reason") == "NotPermitted")
    assert "bearer_token_env" in status["last_error"] and "server-only" not in json.dumps(status)
    assert seen == []


async def test_a_name_resolving_to_loopback_is_refused_on_the_address_connected_to(
    state: store.StateStore, tenant: store.Tenant, listener: tuple[int, list[str]]
) -> None:
    """Applied while the name pointed elsewhere (DNS rebinding): the connection checks the address again."""
    name = socket.gethostname()
    if trust.egress.classify(trust.egress.parse_host(socket.gethostbyname(name)) or
                             trust.egress.parse_host("8.8.8.8")) is None:
        pytest.skip(f"{name} does not resolve to an internal address here")
    port, seen = listener
    runtime = connectors.ConnectorRuntime(connectors.MemoryPinStore(), FAST)
    spec = specs.models.ConnectorSpec.model_validate(
        {"transport": {"http": {"url": f"https://{name}:{port}/mcp"}}, "capabilities": {"a.b": "b"}})
    grant = trust.Boundary().grant(spec, trust.Origin.TENANT)
    async with runtime:
        await runtime.ensure(tenant.id, "rebound", spec, grant=grant)
        state_now = await runtime.wait_for(tenant.id, "rebound", lambda s: s.last_error is not None, WAIT)
    assert "loopback" in (state_now.last_error or "")
    assert seen == []


@pytest.fixture
def orders_with_token(tmp_path: Path) -> Iterator[HttpOrders]:
    server = HttpOrders(tmp_path / "orders.db", token="t0ken-value-1")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_an_allowed_http_connector_takes_its_token_from_a_tenant_secret(
    state: store.StateStore, tenant: store.Tenant, running: Running, orders_with_token: HttpOrders,
    ledger: Any,
) -> None:
    http = {"url": orders_with_token.url, "bearer_token_ref": "orders-token"}
    document = connector("orders", {"http": http})
    document["spec"]["capabilities"] = {"orders.read": "orders.read"}
    app = create_app(settings.Settings(), state, running.controller, receipts=ledger,
                     boundary=running.boundary)
    _, key = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fibric.test",
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        applied = await client.post("/v1/apply", json={"documents": [document]})
        assert applied.status_code == 200, applied.text
        running.controller.notify(tenant.id, "Connector", "orders")
        missing = await status_of(state, tenant, "orders",
                                  lambda s: "orders-token" in str(s.get("last_error")))
        assert missing["connection"] == "disconnected"

        # The secret is sealed with the deployment's box: the same one serve gives the runtime.
        vault.put(state, running.box, tenant.id, "orders-token", "wrong-token")
        running.controller.notify(tenant.id, "Connector", "orders")
        refused = await status_of(state, tenant, "orders", lambda s: "401" in str(s.get("last_error")))
        assert refused["connection"] == "disconnected"

        vault.put(state, running.box, tenant.id, "orders-token", "t0ken-value-1")
        running.controller.notify(tenant.id, "Connector", "orders")  # the secrets route does this
        await status_of(state, tenant, "orders", lambda s: s.get("connection") == "connected")
        shown = (await client.get("/v1/connectors/orders")).text + (await client.get("/v1/specs")).text
    assert "t0ken-value-1" not in shown and "wrong-token" not in shown


class _LeakyServer(BaseHTTPRequestHandler):
    """Answers every MCP request with an error whose text an internal service should never leak."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        body = json.dumps({"jsonrpc": "2.0", "id": request.get("id"),
                           "error": {"code": -32000, "message": "db 10.9.8.7 password=hunter2"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def leaky() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LeakyServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/mcp"
    server.shutdown()
    server.server_close()


async def test_a_private_target_error_text_is_withheld_from_the_tenant(
    state: store.StateStore, tenant: store.Tenant, running: Running, leaky: str
) -> None:
    document = connector("leaky", {"http": {"url": leaky}})
    loaded = [specs.Loaded(specs.validate_data(document), specs.Source(file="documents[0]"))]
    applier.apply(state, tenant.id, loaded, options=applier.Options(running.boundary))
    running.controller.notify(tenant.id, "Connector", "leaky")
    status = await status_of(state, tenant, "leaky", lambda s: s.get("last_error") is not None)
    assert "MCP error -32000" in status["last_error"] and trust.boundary.WITHHELD in status["last_error"]
    assert "hunter2" not in json.dumps(status) and "10.9.8.7" not in json.dumps(status)

    # The installation's own spec to the same target shows the server's words (its operator's log).
    own_doc = specs.validate_data(connector("leaky-own", {"http": {"url": leaky}}))
    applier.apply(state, tenant.id, [specs.Loaded(own_doc, specs.Source(file="x"))],
                  origin=trust.Origin.INSTALLATION)
    running.controller.notify(tenant.id, "Connector", "leaky-own")
    own = await status_of(state, tenant, "leaky-own", lambda s: s.get("last_error") is not None)
    assert "hunter2" in own["last_error"]


def test_a_transport_the_boundary_does_not_know_is_refused_for_a_tenant_at_apply_and_at_run_time() -> None:
    """Fail closed for the next transport someone adds: until the boundary learns it, no tenant uses it."""
    unknown = specs.models.Transport.model_construct(catalog=None, stdio=None, http=None)
    spec = specs.models.ConnectorSpec.model_construct(
        display_name=None, kind="saas", transport=unknown, capabilities={"orders.read": "orders.read"})
    doc = specs.models.Connector.model_construct(
        apiVersion=specs.API_VERSION, kind="Connector", metadata=specs.models.Metadata(name="new"), spec=spec)
    loaded = specs.Loaded(document=doc, source=specs.loader.Source("connector.yaml", 1))
    boundary = trust.Boundary()

    [problem] = boundary.admit([loaded], trust.Origin.TENANT, {})
    assert (problem.path, problem.message) == (
        "spec.transport", "a tenant's connector may use transport.catalog or transport.http only")
    with pytest.raises(trust.NotPermitted):
        boundary.grant(spec, trust.Origin.TENANT)
