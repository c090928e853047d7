"""/v1/policies (docs/api.md) and /v1/webhooks (the reference): create, read, delete."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from api_support import TestClient, apply, error_of, fields_of, operator_doc, policy_doc, webhook_doc

REGO = "package fibric.ship_risk\n\ndefault decision := {\"decision\": \"BLOCK\", \"rule\": \"deny\"}\n"


def test_create_a_policy(client: TestClient) -> None:
    response = client.post("/v1/policies", json={"name": "ship-risk-guard", "rego": REGO,
                                                 "test_rego": ["package fibric.ship_risk_test"]})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"].startswith("pol_")
    assert body["object"] == "policy"
    assert body["name"] == "ship-risk-guard"
    assert body["query"] == "data.fibric.ship_risk.decision"  # the default, from the package
    assert body["sha256"] == hashlib.sha256(REGO.encode()).hexdigest()
    assert body["generation"] == 1
    assert body["conditions"] == []
    assert client.get(f"/v1/policies/{body['id']}").json() == body


def test_a_policy_keeps_an_explicit_query(client: TestClient) -> None:
    body = client.post("/v1/policies", json={"name": "g", "rego": REGO,
                                             "query": "data.fibric.ship_risk.verdict"}).json()
    assert body["query"] == "data.fibric.ship_risk.verdict"


def test_list_policies_newest_first(client: TestClient) -> None:
    apply(client, [policy_doc("first"), policy_doc("second")])
    listed = client.get("/v1/policies").json()
    assert [p["name"] for p in listed["data"]] == ["second", "first"]
    assert listed["has_more"] is False and listed["next_cursor"] is None


def test_a_taken_policy_name_is_409(client: TestClient) -> None:
    assert client.post("/v1/policies", json={"name": "g", "rego": REGO}).status_code == 201
    error_of(client.post("/v1/policies", json={"name": "g", "rego": "package other"}), 409, "conflict")


def test_a_policy_bound_to_an_operator_cannot_be_deleted(client: TestClient) -> None:
    apply(client, [policy_doc("guard"), operator_doc("ship-risk", "guard")])
    error = error_of(client.delete("/v1/policies/guard"), 409, "conflict")
    assert "ship-risk" in error["message"]
    assert client.get("/v1/policies/guard").status_code == 200
    assert client.delete("/v1/operators/ship-risk").status_code == 200
    policy_id = client.get("/v1/policies/guard").json()["id"]
    response = client.delete(f"/v1/policies/{policy_id}")
    assert response.json() == {"id": policy_id, "object": "policy", "deleted": True}


def test_create_a_webhook_shows_the_secret_once(client: TestClient) -> None:
    response = client.post("/v1/webhooks", json={
        "url": "https://acme.com/hooks/fibric",
        "events": ["plan.proposed", "receipt.created"],
        "description": "Route at-risk holds into our ops channel",
    })
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["id"].startswith("whk_")
    assert created["object"] == "webhook"
    assert created["url"] == "https://acme.com/hooks/fibric"
    assert created["events"] == ["plan.proposed", "receipt.created"]
    assert created["signing_secret"].startswith("whsec_")
    assert created["status"] == "enabled"
    assert created["name"].startswith("webhook-")
    assert created["description"] == "Route at-risk holds into our ops channel"

    listed = client.get("/v1/webhooks")
    [webhook] = listed.json()["data"]
    assert webhook["id"] == created["id"]
    assert "signing_secret" not in webhook
    retrieved = client.get(f"/v1/webhooks/{created['id']}")
    assert "signing_secret" not in retrieved.json()
    specs = client.get("/v1/specs")
    for response in (listed, retrieved, specs):
        assert created["signing_secret"] not in response.text


def test_webhooks_with_a_name_and_duplicates(client: TestClient) -> None:
    body = {"name": "ops-channel", "url": "https://a.example/h", "events": ["plan.executed"]}
    assert client.post("/v1/webhooks", json=body).json()["name"] == "ops-channel"
    error_of(client.post("/v1/webhooks", json=body), 409, "conflict")
    assert len(client.get("/v1/webhooks").json()["data"]) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"url": "ftp://a.example"}, "url"),
        ({"events": ["plan.eaten"]}, "events[0]"),
        ({"events": []}, "events"),
        ({"events": "plan.proposed"}, "events"),
        ({"name": "Ops Channel"}, "name"),
    ],
)
def test_a_bad_webhook_field_is_400_naming_it(
    client: TestClient, change: dict[str, Any], field: str
) -> None:
    body = {"url": "https://a.example/h", "events": ["plan.proposed"], **change}
    assert field in fields_of(error_of(client.post("/v1/webhooks", json=body), 400, "invalid_request"))


def test_delete_a_webhook(client: TestClient) -> None:
    apply(client, [webhook_doc("ops-channel", secret_ref="ops-secret")])
    webhook_id = client.get("/v1/webhooks").json()["data"][0]["id"]
    response = client.delete("/v1/webhooks/ops-channel")
    assert response.json() == {"id": webhook_id, "object": "webhook", "deleted": True}
    assert client.get("/v1/webhooks").json()["data"] == []
