"""The controller inside the API's lifespan: a write through the API shows up as observed status."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from fibric import settings, store
from fibric.api import create_app
from fibric.controller import Controller


def doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "fibric.io/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def wait_for(get: Any, check: Any, timeout: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        body = get()
        if check(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.02)


def test_api_writes_are_reconciled_and_visible(state: store.StateStore, tenant: store.Tenant) -> None:
    config = settings.Settings(controller=settings.ControllerSettings(resync_seconds=3600))
    app = create_app(config, state, Controller(state, config.controller))
    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    with TestClient(app, headers={"Authorization": f"Bearer {secret}"}) as client:
        response = client.post("/v1/apply", json={"documents": [
            doc("Policy", "guard", {"rego": "package fibric.guard\n"}),
            doc("Operator", "ship-risk", {"capabilities": ["orders.hold"], "policy": "guard"}),
        ]})
        assert response.status_code == 200, response.text
        operator = wait_for(lambda: client.get("/v1/operators/ship-risk").json(),
                            lambda body: body["observed_generation"] == 1)
        assert operator["observed_generation"] == 1
        conds = {c["type"]: c for c in operator["conditions"]}
        assert conds["Ready"]["status"] == "True"
        assert conds["CapabilitiesFulfilled"]["reason"] == "UnfulfilledCapabilities"

        # A connector that maps the capability, applied later, updates the operator too.
        response = client.post("/v1/apply", json={"documents": [doc("Connector", "magento", {
            "transport": {"http": {"url": "https://orders.example/mcp"}},
            "capabilities": {"orders.hold": "hold"}})]})
        assert response.status_code == 200, response.text
        operator = wait_for(
            lambda: client.get("/v1/operators/ship-risk").json(),
            lambda body: {c["type"]: c["status"] for c in body["conditions"]}.get(
                "CapabilitiesFulfilled") == "True",
        )
        assert {c["type"]: c["status"] for c in operator["conditions"]}["CapabilitiesFulfilled"] == "True"
        connector = client.get("/v1/connectors/cn_magento").json()
        assert (connector["status"], connector["tools"], connector["last_synced_at"]) == (
            "disconnected", [], None)
