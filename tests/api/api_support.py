"""Helpers the API tests share: spec documents, an apply call, and the error-shape check."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from fibric import store
from fibric.store import plan_store, receipt_store

with warnings.catch_warnings():
    # Starlette asks for httpx2 instead of httpx; the client behaves the same.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

__all__ = ["Executor", "Recorder", "TestClient"]

MAX_BODY = 64 * 1024  # the test app's body limit


class Recorder:
    """Stands in for the controller: records notify calls and lifespan events."""

    def __init__(self) -> None:
        self.notified: list[tuple[str, str, str]] = []
        self.events: list[str] = []

    def notify(self, tenant_id: str, kind: str, name: str) -> None:
        self.notified.append((tenant_id, kind, name))

    async def start(self) -> None:
        self.events.append("start")

    async def stop(self) -> None:
        self.events.append("stop")


# --- spec documents ------------------------------------------------------------


def doc(kind: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "fibric.io/v1", "kind": kind,
            "metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def policy_doc(name: str = "guard") -> dict[str, Any]:
    package = name.replace("-", "_")
    return doc("Policy", name, {
        "rego": f"package fibric.{package}\n\n"
                "default decision := {\"decision\": \"BLOCK\", \"rule\": \"deny\"}\n",
        "query": f"data.fibric.{package}.decision",
    })


def operator_doc(name: str = "ship-risk", policy: str = "guard", **spec: Any) -> dict[str, Any]:
    return doc("Operator", name, {"capabilities": ["orders.hold"], "policy": policy, **spec})


def connector_doc(
    name: str = "magento", capabilities: tuple[str, ...] = ("orders.hold",), **spec: Any
) -> dict[str, Any]:
    return doc("Connector", name, {
        "transport": {"http": {"url": "https://orders.example/mcp"}},
        "capabilities": {c: c for c in capabilities},
        **spec,
    })


def webhook_doc(name: str = "ops-channel", **spec: Any) -> dict[str, Any]:
    return doc("Webhook", name, {"url": "https://acme.example/hooks", "events": ["plan.proposed"],
                                 **spec})


def apply(client: TestClient, documents: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
    """POST /v1/apply, asserting success."""
    response = client.post("/v1/apply", json={"documents": documents, **options})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    """The error object of a response, after checking the reference's full error shape."""
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert error["docs"] == f"https://api.fibric.io/docs/errors#{code}"
    assert error["request_id"].startswith("req_")
    assert response.headers["Request-Id"] == error["request_id"]
    assert isinstance(error["message"], str) and error["message"]
    return error


def fields_of(error: dict[str, Any]) -> list[str]:
    return [f["field"] for f in error.get("fields", [])]


# --- a live server ----------------------------------------------------------------


# --- plans, receipts and an executor ------------------------------------------------


def action(capability: str, key: str, decision: str = "ALLOW", entity: str = "order:SO-10884",
           **args: Any) -> dict[str, Any]:
    return {"capability": capability, "entity_key": entity, "idempotency_key": key, "args": args,
            "decision": decision}


def new_receipt(tenant: store.Tenant, **fields: Any) -> receipt_store.NewReceipt:
    values: dict[str, Any] = {
        "reseller_id": tenant.reseller_id, "tenant_id": tenant.id, "operator_id": "op_8f2a1c",
        "operator": "ship-risk", "capability": "orders.hold", "entity_key": "order:SO-10884",
        "idempotency_key": "ship-risk:SO-10884:hold", "decision": "ALLOW", "outcome": "applied",
        "rule": "orders.hold", **fields,
    }
    return receipt_store.NewReceipt(**values)


class Executor:
    """Stands in for the executor at its boundary (context.Executor): disposes of approved plans.

    Each action's pre-evaluated decision stands in for the policy: BLOCK is
    refused, a key applied before is deduplicated, anything else applied; a
    receipt is appended for every action run.
    """

    def __init__(self, state: store.StateStore, ledger: receipt_store.StoreLedger) -> None:
        self.state = state
        self.ledger = ledger
        self.calls: list[tuple[str, str, list[str] | None]] = []

    def execute(self, plan: plan_store.Plan, *, only_actions: Sequence[str] | None) -> plan_store.Plan:
        self.calls.append((plan.id, plan.status, list(only_actions) if only_actions else None))
        reseller_id = plan.reseller_id
        results = []
        for item in plan.actions:
            if only_actions is not None and item["idempotency_key"] not in only_actions:
                continue
            decision = item.get("decision") or "BLOCK"
            outcome = "refused" if decision == "BLOCK" else "applied"
            if outcome == "applied" and self.ledger.applied(plan.tenant_id, item["idempotency_key"]):
                decision, outcome = "DEDUP", "deduplicated"
            receipt = self.ledger.append(receipt_store.NewReceipt(
                reseller_id=reseller_id, tenant_id=plan.tenant_id, operator_id=plan.operator_id,
                operator="ship-risk", capability=item["capability"], entity_key=item["entity_key"],
                idempotency_key=item["idempotency_key"], decision=decision, outcome=outcome,
                rule=item["capability"], plan_id=plan.id, approver=plan.approver,
                args=item.get("args", {}), policy_id=plan.policy_id,
            ))
            result = {"idempotency_key": item["idempotency_key"], "decision": decision,
                      "outcome": outcome, "receipt_id": receipt.id}
            if outcome == "refused":
                result["rule"] = item["capability"]
            results.append(result)
        status = "blocked" if all(r["outcome"] == "refused" for r in results) else "executed"
        return plan_store.record_results(self.state, plan.tenant_id, plan.id, status=status, results=results)
