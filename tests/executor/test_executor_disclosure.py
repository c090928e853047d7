"""A private target's own error text reaches its tenant nowhere: not a status, a receipt or an API answer.

An internal service behind an HTTP connector (a tenant's, to a host the
egress allowlist opens, or a catalog entry's URL) answers every tool call
with a JSON-RPC error naming an internal host and a password. The tenant
applies the connectors, an operator's plan calls them, and the tenant reads
everything it can: the approve answer, the receipts (API and store) and the
connectors' statuses. Fibric's own words stay (which call failed, the error
code); the target's are withheld.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orders_system
from executor_support import running

from fibric import store, trust
from fibric.store import plan_store

SECRETS = ("10.9.8.7", "hunter2", "s3cr3t")
WORDS = "db 10.9.8.7 refused user admin password=hunter2; token=s3cr3t"  # a `;` ends nothing
ALLOW_ALL = (
    'package fibric.allow_all\n\nimport rego.v1\n\ndecision := {"decision": "ALLOW", "rule": "allow-all"}\n'
)


class _InternalService(BaseHTTPRequestHandler):
    """Streamable HTTP MCP, JSON answers: opens and lists one tool, then fails every call with WORDS.

    Under /broken/ it fails `initialize` instead, so the connector never opens.
    """

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if "id" not in request:  # a notification
            self._send(202, b"")
            return
        method = request.get("method")
        answer: dict[str, Any] = {"result": {}}
        if method == "initialize" and self.path.startswith("/broken/"):
            answer = {"error": {"code": -32603, "message": WORDS}}
        elif method == "initialize":
            answer = {"result": {"protocolVersion": request["params"]["protocolVersion"],
                                 "capabilities": {"tools": {}},
                                 "serverInfo": {"name": "internal", "version": "1"}}}
        elif method == "tools/list":
            answer = {"result": {"tools": [{"name": "lookup", "inputSchema": {"type": "object"}}]}}
        elif method == "tools/call":  # not -32000: the MCP SDK reads that code as "connection closed"
            answer = {"error": {"code": -32603, "message": WORDS}}
        self._send(200, json.dumps({"jsonrpc": "2.0", "id": request["id"], **answer}).encode())

    def do_GET(self) -> None:  # no server-initiated stream
        self._send(405, b"")

    def do_DELETE(self) -> None:
        self._send(405, b"")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def internal_service() -> Iterator[str]:
    """The service on loopback; yields its MCP URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _InternalService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mcp"
    finally:
        server.shutdown()
        server.server_close()


def doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "fibric.io/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def test_a_private_targets_own_words_reach_the_tenant_nowhere(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path
) -> None:
    with internal_service() as url:
        catalog = orders_system.orders_catalog(tmp_path / "orders.db") + (
            f"  internal:\n    http: {{url: {json.dumps(url)}}}\n")
        boundary = trust.Boundary(catalog=trust.Catalog.parse(catalog, "catalog.yaml"),
                                  egress=trust.Egress.parse(["127.0.0.1"]))
        transports = {"direct": {"http": {"url": url}}, "listed": {"catalog": "internal"},
                      "broken": {"http": {"url": url.replace("/mcp", "/broken/mcp")}}}
        documents = [
            doc("Policy", "allow-all", {"rego": ALLOW_ALL, "query": "data.fibric.allow_all.decision"}),
            doc("Operator", "lookups", {"capabilities": [f"{n}.lookup" for n in transports],
                                        "policy": "allow-all"}),
            *(doc("Connector", name, {"transport": transport, "capabilities": {f"{name}.lookup": "lookup"}})
              for name, transport in transports.items()),
        ]
        with running(state, tenant, tmp_path, boundary=boundary) as f, f.client() as c:
            assert c.post("/v1/apply", json={"documents": documents}).status_code == 200
            deadline = time.monotonic() + 60
            wanted = {"direct": "connected", "listed": "connected", "broken": "disconnected"}
            while {n: c.get(f"/v1/connectors/cn_{n}").json().get("status") for n in wanted} != wanted:
                assert time.monotonic() < deadline, "the connectors never settled"
                time.sleep(0.05)
            operator = state.get_object(tenant.id, "Operator", "lookups")
            plan = plan_store.propose(state, tenant.id, operator_id=operator.id, policy_id=None, actions=[
                {"capability": f"{n}.lookup", "entity_key": f"lookup:{n}", "idempotency_key": f"lookup:{n}",
                 "args": {}, "decision": "ALLOW"} for n in transports])

            approved = c.post(f"/v1/plans/{plan.id}/approve", json={})

            assert approved.status_code == 200, approved.text
            results = {r["idempotency_key"]: r for r in approved.json()["results"]}
            assert {r["outcome"] for r in results.values()} == {"failed"}, results
            stored = {n: f.ledger.get(tenant.id, results[f"lookup:{n}"]["receipt_id"]) for n in transports}
            seen = [approved.text, c.get("/v1/receipts").text,
                    *(json.dumps(r.detail) for r in stored.values()),
                    *(c.get(f"/v1/connectors/cn_{n}").text for n in transports),
                    *(json.dumps(o.status) for o in state.list_objects(tenant.id, "Connector"))]
    for shown in seen:
        assert not [s for s in SECRETS if s in shown], shown
    for name in ("direct", "listed"):  # Fibric's own words stay: which call, which error code
        error = stored[name].detail["error"]
        assert "lookup: MCP error -32603" in error and trust.boundary.WITHHELD in error, error
    assert "has not listed its tools yet" in stored["broken"].detail["error"]
