"""The OpenAPI 3.1 document: a named component per object, saying exactly what the routes return."""

from __future__ import annotations

from typing import Any

import pytest
from api_support import (
    Executor,
    TestClient,
    action,
    apply,
    connector_doc,
    new_receipt,
    operator_doc,
    policy_doc,
)
from pydantic import BaseModel

from fibric import store
from fibric.api import schemas
from fibric.store import plan_store, receipt_store

COMPONENTS = ["Operator", "OperatorList", "Connector", "ConnectorList", "Event", "EventList",
              "ExecutionPlan", "ExecutionPlanSummary", "ExecutionPlanList", "PlanAction", "PlanResult",
              "Receipt", "ReceiptSummary", "ReceiptList", "Webhook", "WebhookCreated", "WebhookList",
              "Policy", "PolicyList", "Spec", "SpecList", "ApplyResult", "Deleted", "Error", "ErrorDetail"]


@pytest.fixture
def document(client: TestClient) -> dict[str, Any]:
    body: dict[str, Any] = client.get("/v1/openapi.json").json()
    return body


def test_it_is_openapi_3_1_with_a_component_per_object(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    assert set(COMPONENTS) <= set(document["components"]["schemas"])
    assert "HTTPValidationError" not in str(document)  # invalid input is 400 with Error, never 422
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_every_operation_documents_its_errors_and_headers(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            for status in ("400", "401", "403", "429", "500"):
                assert responses[status]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"}, (method, path, status)
            assert "Request-Id" in responses["429"]["headers"]
            assert "Retry-After" in responses["429"]["headers"]
            params = [p["name"] for p in operation.get("parameters", [])]
            assert ("Idempotency-Key" in params) == (method == "post"), (method, path)
            if "requestBody" in operation:  # any body can be over the server's limit
                assert "413" in responses, (method, path)
    approve = document["paths"]["/v1/plans/{plan_id}/approve"]["post"]["responses"]
    assert {"200", "404", "409"} <= set(approve)
    assert {"200", "202"} <= set(document["paths"]["/v1/events"]["post"]["responses"])


def fields(model: type[BaseModel], *, only_required: bool = False) -> set[str]:
    return {name for name, info in model.model_fields.items() if info.is_required() or not only_required}


def test_components_name_exactly_the_fields_routes_return(
    app: Any, client: TestClient, state: store.StateStore, tenant: store.Tenant, ledger: receipt_store.Ledger,
) -> None:
    apply(client, [policy_doc("guard"), connector_doc("magento"), operator_doc("ship-risk", "guard")])
    operator_id = client.get("/v1/operators/ship-risk").json()["id"]
    plan = plan_store.propose(state, tenant.id, operator_id=operator_id,
                              actions=[action("orders.hold", "k1")], policy_id=None)
    receipt = ledger.append(new_receipt(tenant))
    event = client.post("/v1/events", json={"type": "a.b", "entity_key": "e", "idempotency_key": "k",
                                            "data": {}}).json()
    webhook = client.post("/v1/webhooks", json={"url": "https://a.example/h", "events": ["plan.proposed"]})
    app.state.executor = Executor(state, ledger)
    approved = client.post(f"/v1/plans/{plan.id}/approve").json()
    cases: list[tuple[type[BaseModel], dict[str, Any]]] = [
        (schemas.Operator, client.get(f"/v1/operators/{operator_id}").json()),
        (schemas.Operator, client.get("/v1/operators").json()["data"][0]),
        (schemas.Connector, client.get("/v1/connectors/magento").json()),
        (schemas.Connector, client.get("/v1/connectors").json()["data"][0]),
        (schemas.Policy, client.get("/v1/policies/guard").json()),
        (schemas.WebhookCreated, webhook.json()),
        (schemas.Webhook, client.get("/v1/webhooks").json()["data"][0]),
        (schemas.Event, event),
        (schemas.Event, client.get(f"/v1/events/{event['id']}").json()),
        (schemas.ExecutionPlanSummary, client.get("/v1/plans").json()["data"][0]),
        (schemas.ExecutionPlan, client.get(f"/v1/plans/{plan.id}").json()),
        (schemas.ExecutionPlan, approved),
        (schemas.ReceiptSummary, client.get("/v1/receipts").json()["data"][0]),
        (schemas.Receipt, client.get(f"/v1/receipts/{receipt.id}").json()),
        (schemas.Spec, client.get("/v1/specs").json()["data"][0]),
        (schemas.Deleted, client.delete("/v1/connectors/magento").json()),
    ]
    for model, body in cases:
        model.model_validate(body)  # the types hold
        assert fields(model, only_required=True) <= set(body) <= fields(model), model.__name__
        for key, value in body.items():  # nested objects too
            annotation = model.model_fields[key].annotation
            if isinstance(value, dict) and isinstance(annotation, type) and issubclass(annotation, BaseModel):
                assert set(value) <= fields(annotation), f"{model.__name__}.{key}"
