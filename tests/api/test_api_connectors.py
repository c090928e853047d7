"""/v1/connectors as the reference writes it: declared by specs, observed by the controller."""

from __future__ import annotations

from api_support import TestClient, apply, connector_doc, error_of, fields_of, operator_doc, policy_doc

from fibric import store


def test_list_has_the_reference_shape(client: TestClient) -> None:
    apply(client, [connector_doc("magento", ("orders.read", "orders.hold", "orders.notify"),
                                 display_name="Magento Orders")])
    listed = client.get("/v1/connectors").json()
    assert listed["object"] == "list" and listed["has_more"] is False
    [connector] = listed["data"]
    assert connector["id"] == "cn_magento"
    assert connector["object"] == "connector"
    assert connector["name"] == "Magento Orders"
    assert connector["kind"] == "saas"
    assert connector["transport"] == "mcp"
    # Capabilities read in the order the spec declares them, as in the reference.
    assert connector["capabilities"] == ["orders.read", "orders.hold", "orders.notify"]
    # Before the controller has connected it, a connector is reported disconnected.
    assert connector["status"] == "disconnected"


def test_the_name_falls_back_to_the_object_name(client: TestClient) -> None:
    apply(client, [connector_doc("zendesk")])
    assert client.get("/v1/connectors/cn_zendesk").json()["name"] == "zendesk"


def test_retrieve_shows_what_the_controller_observed(
    client: TestClient, state: store.StateStore, tenant: store.Tenant
) -> None:
    apply(client, [connector_doc("magento", ("orders.read", "orders.hold"))])
    obj = state.get_object(tenant.id, "Connector", "magento")
    state.set_status(obj, {
        "observed_generation": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Connected", "message": "",
                        "last_transition_time": "2026-06-14T08:59:40Z"}],
        "connection": "connected",
        "tools": [{"name": "orders.read", "side_effect": False},
                  {"name": "orders.hold", "side_effect": True}],
        "last_synced_at": "2026-06-14T08:59:40Z",
        "last_error": None,
    })
    body = client.get("/v1/connectors/cn_magento").json()
    assert body["status"] == "connected"
    assert body["tools"] == [{"name": "orders.read", "side_effect": False},
                             {"name": "orders.hold", "side_effect": True}]
    assert body["last_synced_at"] == "2026-06-14T08:59:40Z"
    assert body["observed_generation"] == 1
    assert body["conditions"][0]["type"] == "Ready"


def test_retrieve_before_any_observation_has_no_tools(client: TestClient) -> None:
    apply(client, [connector_doc("magento")])
    body = client.get("/v1/connectors/magento").json()
    assert body["tools"] == []
    assert body["last_synced_at"] is None
    assert body["status"] == "disconnected"


def test_list_filters_by_capability_and_kind(client: TestClient) -> None:
    apply(client, [
        connector_doc("magento", ("orders.read", "orders.hold")),
        connector_doc("locks", ("doors.lock",), kind="hardware"),
        connector_doc("shopify", ("orders.hold",), kind="saas"),
    ])

    def ids(**params: str) -> list[str]:
        response = client.get("/v1/connectors", params=params)
        assert response.status_code == 200, response.text
        return [c["id"] for c in response.json()["data"]]

    assert ids(capability="orders.hold") == ["cn_shopify", "cn_magento"]
    assert ids(kind="hardware") == ["cn_locks"]
    assert ids(capability="orders.hold", kind="saas") == ["cn_shopify", "cn_magento"]
    assert ids(capability="orders.refund") == []
    assert ids(kind="operator") == []


def test_an_unknown_kind_filter_is_400_naming_it(client: TestClient) -> None:
    error = error_of(client.get("/v1/connectors", params={"kind": "bogus"}), 400, "invalid_request")
    assert fields_of(error) == ["kind"]


def test_delete_a_connector(client: TestClient) -> None:
    apply(client, [connector_doc("magento")])
    response = client.delete("/v1/connectors/cn_magento")
    assert response.json() == {"id": "cn_magento", "object": "connector", "deleted": True}
    assert client.get("/v1/connectors").json()["data"] == []


def test_an_operator_keeps_its_capability_when_the_connector_goes(client: TestClient) -> None:
    apply(client, [policy_doc(), connector_doc("magento"), operator_doc()])
    assert client.delete("/v1/connectors/magento").status_code == 200
    assert client.get("/v1/operators/ship-risk").json()["capabilities"] == ["orders.hold"]
