"""The tenant wall at run time, not only at apply: what a tenant declared never reaches the host.

A tenant's webhook is signed with the tenant secret it names and never with a
server variable, at delivery as well as at apply; a tenant's HTTP connector
follows no redirect off its origin; a receipts query past its row cap is a 400
naming the field, and a NaN answer keeps the keep-alive connection usable.
All against the real thing: a loopback receiver, the dispatcher, the
connector runtime, uvicorn and DuckDB.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import live_server
import pytest
from trust_support import TestClient, error

from fibric import connectors, errors, settings, specs, store, trust, webhooks
from fibric.api import create_app
from fibric.controller import applier, dispatch, watch
from fibric.store import audit_sql, deliveries, plan_store, receipt_store, sealed, secretbox, vault

LOOPBACK = trust.Boundary(egress=trust.Egress.parse(["127.0.0.1"]))  # the installation allows its tests
WAIT = 30.0


class _Recorder(BaseHTTPRequestHandler):
    """Records every request; answers 200, or 307 to `location` when the server has one."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((dict(self.headers.items()), body))  # type: ignore[attr-defined]
        location = self.server.location  # type: ignore[attr-defined]
        self.send_response(307 if location else 200)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Recorder:
    def __init__(self, location: str | None = None) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        self.server.daemon_threads = True
        self.server.seen = self.seen = []  # type: ignore[attr-defined]
        self.server.location = location  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# --- webhooks: the tenant's secret at delivery, never a server variable ------------------------------


def _box() -> secretbox.SecretBox:
    return secretbox.SecretBox(key=secretbox.new_key())


def _dispatcher(
    state: store.StateStore, box: secretbox.SecretBox, environ: dict[str, str]
) -> dispatch.Dispatcher:
    """A dispatcher as serve builds it for production (no development setting), over LOOPBACK's allowlist."""
    config = settings.WebhookSettings(connect_timeout_seconds=2.0, read_timeout_seconds=2.0,
                                      poll_seconds=0.05)
    return dispatch.Dispatcher(state, config, box, environ=environ, boundary=LOOPBACK)


def _propose(state: store.StateStore, tenant: store.Tenant) -> None:
    action = {"capability": "orders.hold", "entity_key": "order:1", "idempotency_key": "k1", "args": {},
              "decision": "ALLOW"}
    plan_store.propose(state, tenant.id, operator_id="op_1", actions=[action], policy_id=None)


@pytest.mark.anyio
async def test_a_tenant_webhook_is_signed_with_the_tenant_secret_it_names(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    box = _box()
    with Recorder() as receiver:
        document = specs.build("Webhook", "ops", {"url": receiver.url + "/h", "events": ["plan.proposed"],
                                                  "secret_ref": "ops-hook"})
        applier.apply(state, tenant.id, [specs.Loaded(document, specs.Source(file=""))],
                      options=applier.Options(LOOPBACK, box))
        vault.put(state, box, tenant.id, "ops-hook", "whsec-tenant-value")
        _propose(state, tenant)
        service = _dispatcher(state, box, {"ops-hook": "server-value"})
        try:
            await service.run_once()
        finally:
            await service.aclose()
    [(headers, body)] = receiver.seen
    event = webhooks.verify(body, headers["Fibric-Signature"], "whsec-tenant-value")
    assert event["type"] == "plan.proposed"
    with pytest.raises(webhooks.SignatureVerificationError):  # the server's value signs nothing
        webhooks.verify(body, headers["Fibric-Signature"], "server-value")


@pytest.mark.anyio
async def test_a_tenant_webhook_row_naming_a_server_variable_is_never_signed_or_sent(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    """A row a tenant wrote before the boundary: the dispatcher neither reads the variable nor delivers."""
    box = _box()
    with Recorder() as receiver:
        document = specs.validate_data({"apiVersion": "fibric.io/v1", "kind": "Webhook",
                                        "metadata": {"name": "legacy"},
                                        "spec": {"url": receiver.url + "/h", "events": ["plan.proposed"],
                                                 "secret_env": "FIBRIC_SECRET_KEY"}})
        with state.tenant_transaction(tenant.id) as tx:
            tx.insert(document.kind, document.name, document.spec_dict(), {})  # type: ignore[attr-defined]
        _propose(state, tenant)
        service = _dispatcher(state, box, {"FIBRIC_SECRET_KEY": "the-deployment-key"})
        try:
            await service.run_once()
        finally:
            await service.aclose()
    assert receiver.seen == []
    webhook = state.get_object(tenant.id, "Webhook", "legacy")
    [item] = deliveries.list_deliveries(state, tenant.id, webhook.id)
    assert item.status != "delivered" and "only the installation" in (item.last_error or "")
    assert "the-deployment-key" not in json.dumps([item.last_error, webhook.status])


# --- connectors: no redirect off the origin ---------------------------------------------------------


@pytest.mark.anyio
async def test_a_tenant_http_connector_follows_no_redirect_to_another_origin(tenant: store.Tenant) -> None:
    """The target redirects to another server the allowlist also allows: it is never contacted."""
    with Recorder() as elsewhere, Recorder(location=elsewhere.url + "/mcp") as target:
        spec = specs.models.ConnectorSpec.model_validate(
            {"transport": {"http": {"url": target.url + "/mcp"}}, "capabilities": {"a.b": "b"}})
        grant = LOOPBACK.grant(spec, trust.Origin.TENANT)
        fast = connectors.ConnectorSettings(call_timeout=10.0, connect_timeout=10.0, backoff_initial=0.05,
                                            backoff_max=0.3, backoff_jitter=0.0)
        runtime = connectors.ConnectorRuntime(connectors.MemoryPinStore(), fast)
        async with runtime:
            await runtime.ensure(tenant.id, "redirected", spec, grant=grant)
            now = await runtime.wait_for(tenant.id, "redirected", lambda s: s.last_error is not None, WAIT)
            await anyio.sleep(0.3)
    assert target.seen, "the connector never reached its target"
    assert elsewhere.seen == []
    assert now.connection == "disconnected" and "initialize failed" in (now.last_error or "")
    # The SDK's words name the redirect's target; from an allowlisted (private) target they are withheld.
    assert trust.boundary.WITHHELD in (now.last_error or "") and elsewhere.url not in (now.last_error or "")


# --- the receipts query: past the row cap, and NaN on a kept-alive connection ------------------------


@pytest.fixture
def query_app(tmp_path: Path) -> Iterator[tuple[Any, store.StateStore, store.Tenant]]:
    data = tmp_path / "data"
    data.mkdir()
    state = store.open_store(settings.StoreSettings(data_dir=data).location)
    tenant = state.create_tenant("acme", "rs_fibric")
    lake = sealed.SealedLedger(data)
    try:
        yield (create_app(settings.Settings(), state, receipts=receipt_store.StoreLedger(state), sealed=lake),
               state, tenant)
    finally:
        lake.close()
        state.close()


@pytest.mark.parametrize("max_rows", [0, audit_sql.MAX_ROWS + 1, -1])
def test_a_row_cap_outside_its_range_is_a_400_naming_max_rows(
    query_app: tuple[Any, store.StateStore, store.Tenant], max_rows: int
) -> None:
    app, state, tenant = query_app
    _, secret = state.create_api_key(tenant.id, frozenset({"receipts:read"}))
    with TestClient(app, headers={"Authorization": f"Bearer {secret}"}) as client:
        response = client.post("/v1/receipts/query", json={"sql": "SELECT 1", "max_rows": max_rows})
    body = error(response, 400)
    assert body["code"] == "invalid_request"
    assert [f["field"] for f in body["fields"]] == ["max_rows"]


def test_a_nan_answer_keeps_the_connection_alive_for_the_next_request(
    query_app: tuple[Any, store.StateStore, store.Tenant],
) -> None:
    """The issue's report: 'nan'::DOUBLE was a 500 and the keep-alive connection was then reset."""
    app, state, tenant = query_app
    _, secret = state.create_api_key(tenant.id, frozenset({"receipts:read"}))
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    with live_server.serving(app) as url:
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=WAIT)
        try:
            answers, sockets = [], []
            for sql in ("SELECT 'nan'::DOUBLE AS d, 'inf'::DOUBLE AS i, now() AS t", "SELECT 2 AS n"):
                conn.request("POST", "/v1/receipts/query", body=json.dumps({"sql": sql}), headers=headers)
                sockets.append(conn.sock)
                response = conn.getresponse()
                answers.append((response.status, response.getheader("Connection"), response.read()))
        finally:
            conn.close()
    assert isinstance(sockets[0], socket.socket) and sockets[1] is sockets[0]  # one connection carried both

    def strict(content: bytes) -> Any:
        return json.loads(content, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))

    (status, connection, content), (status2, _, content2) = answers
    assert (status, connection) == (200, None), content[:300]
    assert strict(content)["rows"][0][:2] == ["NaN", "Infinity"]
    assert status2 == 200 and strict(content2)["rows"] == [[2]]


# --- the installation's spec folder (`fibric serve --specs`) keeps *_env and stdio ----------------


def test_the_installation_spec_folder_may_name_commands_and_server_variables(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path
) -> None:
    """Existing specs with `*_env` keep working when the installation applies them, as serve's folder does."""
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "legacy.yaml").write_text(
        "apiVersion: fibric.io/v1\nkind: Connector\nmetadata: {name: local}\n"
        "spec:\n  transport: {stdio: {command: python, args: [server.py]}}\n"
        "  capabilities: {orders.hold: orders.hold}\n---\n"
        "apiVersion: fibric.io/v1\nkind: Connector\nmetadata: {name: env}\n"
        "spec:\n  transport: {http: {url: 'http://127.0.0.1:9/mcp', bearer_token_env: TOKEN}}\n"
        "  capabilities: {orders.read: orders.read}\n---\n"
        "apiVersion: fibric.io/v1\nkind: Webhook\nmetadata: {name: env-hook}\n"
        "spec: {url: 'http://10.0.0.1/h', events: [plan.proposed], secret_env: HOOK_SECRET}\n",
        encoding="utf-8")
    result = watch.apply_folder(state, tenant.id, folder, "installation")
    assert sorted(c.action for c in result.changes) == ["created"] * 3
    stored = [o for kind in ("Connector", "Webhook") for o in state.list_objects(tenant.id, kind)]
    assert {o.name: o.origin for o in stored} == {"local": "installation", "env": "installation",
                                                  "env-hook": "installation"}
    # What the runtime is granted for them: the command, and the server's variables.
    local = next(o for o in stored if o.name == "local")
    grant = trust.Boundary().grant(specs.models.ConnectorSpec.model_validate(local.spec),
                                   trust.Origin(local.origin))
    assert grant.server_variables and grant.transport.stdio is not None


# --- secrets: a sealed value is bound to its tenant and name ----------------------------------------


def test_a_sealed_secret_copied_to_another_tenant_or_name_does_not_open(
    state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant
) -> None:
    box = _box()
    vault.put(state, box, tenant.id, "orders-token", "acme-token")
    vault.put(state, box, tenant.id, "other-name", "placeholder")
    vault.put(state, box, other_tenant.id, "orders-token", "placeholder")
    with state.backend.transaction(write=False) as cur:
        cur.execute("SELECT sealed FROM tenant_secrets WHERE tenant_id = ? AND name = ?",
                    (tenant.id, "orders-token"))
        [sealed_value] = cur.fetchone()
    with state.backend.transaction(write=True) as cur:  # what someone with the database could do
        cur.execute("UPDATE tenant_secrets SET sealed = ? WHERE (tenant_id = ? AND name = ?)"
                    " OR (tenant_id = ? AND name = ?)",
                    (sealed_value, tenant.id, "other-name", other_tenant.id, "orders-token"))
    assert vault.reveal(state, box, tenant.id, "orders-token") == "acme-token"
    for tenant_id, name in ((tenant.id, "other-name"), (other_tenant.id, "orders-token")):
        with pytest.raises(errors.PermanentError):
            vault.reveal(state, box, tenant_id, name)
