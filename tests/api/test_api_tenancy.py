"""The tenancy wall: another tenant's id reads exactly like an id that never existed."""

from __future__ import annotations

from typing import Any

import pytest
from api_support import TestClient, apply, connector_doc, operator_doc, policy_doc, webhook_doc

KINDS = {"operators": "Operator", "connectors": "Connector", "policies": "Policy", "webhooks": "Webhook"}
MISSING = {"operators": "op_0000000000000000", "connectors": "cn_nothing",
           "policies": "pol_0000000000000000", "webhooks": "whk_0000000000000000"}


@pytest.fixture
def theirs(other_client: TestClient) -> dict[str, dict[str, str]]:
    """Ids and names of one object of each kind, owned by the other tenant."""
    apply(other_client, [policy_doc("guard"), connector_doc("magento"), operator_doc("ship-risk"),
                         webhook_doc("ops-channel")])
    found = {}
    for resource in KINDS:
        [item] = other_client.get(f"/v1/{resource}").json()["data"]
        found[resource] = {"id": item["id"], "name": item.get("name", "")}
    found["connectors"]["name"] = "magento"
    return found


def shape(response: Any, ref: str) -> tuple[int, Any]:
    error = response.json()["error"]
    return response.status_code, {
        "keys": sorted(error),
        "code": error["code"],
        "message": error["message"].replace(ref, "<ref>"),
        "docs": error["docs"],
    }


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("resource", list(KINDS))
@pytest.mark.parametrize("by", ["id", "name"])
def test_another_tenants_object_is_404_like_a_missing_one(
    client: TestClient, other_client: TestClient, theirs: dict[str, dict[str, str]],
    method: str, resource: str, by: str,
) -> None:
    ref = theirs[resource][by]
    foreign = client.request(method, f"/v1/{resource}/{ref}")
    missing = client.request(method, f"/v1/{resource}/{MISSING[resource]}")
    assert foreign.status_code == 404
    assert shape(foreign, ref) == shape(missing, MISSING[resource])
    # And the owner still has it.
    assert other_client.get(f"/v1/{resource}/{theirs[resource]['id']}").status_code == 200


@pytest.mark.parametrize("resource", list(KINDS))
@pytest.mark.parametrize("ref", ["op_%00", "..", "a b", "%E2%98%83", "x" * 300])
def test_refs_that_cannot_name_an_object_are_404(client: TestClient, resource: str, ref: str) -> None:
    for method in ("GET", "DELETE"):
        response = client.request(method, f"/v1/{resource}/{ref}")
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "not_found"


def test_lists_and_specs_show_only_the_callers_objects(
    client: TestClient, theirs: dict[str, dict[str, str]]
) -> None:
    for resource in KINDS:
        assert client.get(f"/v1/{resource}").json()["data"] == []
    assert client.get("/v1/specs").json()["data"] == []


def test_an_apply_cannot_touch_another_tenants_objects(
    client: TestClient, other_client: TestClient, theirs: dict[str, dict[str, str]]
) -> None:
    # Same names, different tenant: these are new objects, not updates of theirs.
    result = apply(client, [policy_doc("guard")], apply_set="prod", prune=True)
    assert [c["action"] for c in result["changes"]] == ["created"]
    assert len(other_client.get("/v1/specs").json()["data"]) == 4
