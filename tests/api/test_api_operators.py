"""/v1/operators as the reference writes it, backed by Operator specs."""

from __future__ import annotations

import re
from typing import Any

import pytest
from api_support import Recorder, TestClient, apply, error_of, fields_of, operator_doc, policy_doc

from fibric import store

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def create_policy(client: TestClient, name: str = "ship-risk-guard") -> dict[str, Any]:
    response = client.post("/v1/policies", json={"name": name, "rego": "package fibric.ship_risk"})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_create_returns_the_reference_shape(client: TestClient) -> None:
    policy = create_policy(client)
    response = client.post("/v1/operators", json={
        "name": "ship-risk",
        "capabilities": ["orders.hold", "orders.notify"],
        "policy_id": policy["id"],
        "schedule": "*/15 * * * *",
    })
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"].startswith("op_")
    assert body["object"] == "operator"
    assert body["name"] == "ship-risk"
    assert body["status"] == "active"
    assert body["capabilities"] == ["orders.hold", "orders.notify"]
    assert body["policy_id"] == policy["id"]
    assert body["schedule"] == "*/15 * * * *"
    assert TIMESTAMP.match(body["created_at"])
    # Additive fields (docs/api.md).
    assert body["model"] == "rules"
    assert body["generation"] == 1
    assert body["last_run"] is None
    assert body["conditions"] == []


def test_retrieve_by_id_and_by_name(client: TestClient) -> None:
    policy = create_policy(client)
    created = client.post("/v1/operators", json={
        "name": "ship-risk", "capabilities": ["orders.hold"], "policy_id": policy["id"],
    }).json()
    for ref in (created["id"], "ship-risk"):
        body = client.get(f"/v1/operators/{ref}").json()
        assert body["id"] == created["id"]
        assert body["policy_id"] == policy["id"]
        assert body["last_run"] is None
        assert body["status"] == "active"


def test_an_applied_operator_reads_with_its_policys_id(client: TestClient) -> None:
    apply(client, [policy_doc("guard"), operator_doc("ship-risk", "guard", lifecycle="paused")])
    policy_id = client.get("/v1/policies/guard").json()["id"]
    listed = client.get("/v1/operators").json()
    assert listed["object"] == "list"
    assert listed["has_more"] is False and listed["next_cursor"] is None
    [operator] = listed["data"]
    assert operator["policy_id"] == policy_id
    assert operator["status"] == "paused"


def test_create_stores_the_policy_name_in_the_spec(client: TestClient) -> None:
    policy = create_policy(client, "guard")
    client.post("/v1/operators", json={"name": "op", "capabilities": ["a.b"], "policy_id": policy["id"]})
    [spec] = client.get("/v1/specs", params={"kind": "Operator"}).json()["data"]
    assert spec["spec"]["policy"] == "guard"


def test_list_filters_by_status(client: TestClient) -> None:
    apply(client, [
        policy_doc("guard"),
        operator_doc("one", lifecycle="active"),
        operator_doc("two", lifecycle="paused"),
        operator_doc("three", lifecycle="draft"),
        operator_doc("four"),
    ])
    def names(status: str) -> list[str]:
        response = client.get("/v1/operators", params={"status": status})
        assert response.status_code == 200
        return [o["name"] for o in response.json()["data"]]

    assert names("active") == ["four", "one"]
    assert names("paused") == ["two"]
    assert names("draft") == ["three"]


def test_an_unknown_status_filter_is_400_naming_it(client: TestClient) -> None:
    error = error_of(client.get("/v1/operators", params={"status": "bogus"}), 400, "invalid_request")
    assert fields_of(error) == ["status"]


def test_create_with_an_unknown_policy_is_400_naming_policy_id(client: TestClient) -> None:
    response = client.post("/v1/operators", json={
        "name": "op", "capabilities": ["a.b"], "policy_id": "pol_doesnotexist",
    })
    assert fields_of(error_of(response, 400, "invalid_request")) == ["policy_id"]


def test_create_with_another_tenants_policy_is_400_naming_policy_id(
    client: TestClient, other_client: TestClient
) -> None:
    theirs = create_policy(other_client)
    response = client.post("/v1/operators", json={
        "name": "op", "capabilities": ["a.b"], "policy_id": theirs["id"],
    })
    assert fields_of(error_of(response, 400, "invalid_request")) == ["policy_id"]
    assert client.get("/v1/operators").json()["data"] == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "Ship Risk"}, "name"),
        ({"capabilities": []}, "capabilities"),
        ({"capabilities": ["orders.hold", "Not A Capability"]}, "capabilities[1]"),
        ({"schedule": "every minute"}, "schedule"),
        ({"status": "running"}, "status"),
        ({"capabilities": "orders.hold"}, "capabilities"),
        ({"rules": [{"when": "true", "actions": [{"capability": "orders.refund"}]}]},
         "rules[0].actions[0].capability"),
    ],
)
def test_create_with_a_bad_field_is_400_naming_the_body_field(
    client: TestClient, change: dict[str, Any], field: str
) -> None:
    policy = create_policy(client)
    body = {"name": "ship-risk", "capabilities": ["orders.hold"], "policy_id": policy["id"], **change}
    error = error_of(client.post("/v1/operators", json=body), 400, "invalid_request")
    assert field in fields_of(error)
    assert client.get("/v1/operators").json()["data"] == []


def test_create_with_a_taken_name_is_409(client: TestClient) -> None:
    policy = create_policy(client)
    body = {"name": "ship-risk", "capabilities": ["orders.hold"], "policy_id": policy["id"]}
    assert client.post("/v1/operators", json=body).status_code == 201
    body["capabilities"] = ["orders.notify"]
    error = error_of(client.post("/v1/operators", json=body), 409, "conflict")
    assert "ship-risk" in error["message"]
    [operator] = client.get("/v1/operators").json()["data"]
    assert operator["capabilities"] == ["orders.hold"]


def test_delete_removes_the_operator(client: TestClient, recorder: Recorder, tenant: store.Tenant) -> None:
    policy = create_policy(client)
    created = client.post("/v1/operators", json={
        "name": "ship-risk", "capabilities": ["orders.hold"], "policy_id": policy["id"],
    }).json()
    response = client.delete(f"/v1/operators/{created['id']}")
    assert response.status_code == 200
    assert response.json() == {"id": created["id"], "object": "operator", "deleted": True}
    error_of(client.get(f"/v1/operators/{created['id']}"), 404, "not_found")
    error_of(client.delete(f"/v1/operators/{created['id']}"), 404, "not_found")
    assert recorder.notified[-1] == (tenant.id, "Operator", "ship-risk")
