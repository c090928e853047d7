"""Authentication and scopes: the key alone decides who calls and what they may do."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from api_support import TestClient, error_of, policy_doc

from fibric import settings, store
from fibric.api import create_app
from fibric.store import receipt_store

ROUTES = [
    ("GET", "/v1/operators"),
    ("POST", "/v1/operators"),
    ("GET", "/v1/operators/op_123"),
    ("DELETE", "/v1/operators/op_123"),
    ("GET", "/v1/connectors"),
    ("GET", "/v1/connectors/cn_magento"),
    ("GET", "/v1/webhooks"),
    ("POST", "/v1/webhooks"),
    ("GET", "/v1/policies"),
    ("POST", "/v1/policies"),
    ("GET", "/v1/specs"),
    ("POST", "/v1/apply"),
    ("POST", "/v1/events"),
    ("GET", "/v1/events"),
    ("GET", "/v1/events/ev_1"),
    ("GET", "/v1/plans"),
    ("GET", "/v1/plans/pl_1"),
    ("POST", "/v1/plans/pl_1/approve"),
    ("GET", "/v1/receipts"),
    ("GET", "/v1/receipts/rc_1"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_refuses_a_request_without_a_key(app: object, method: str, path: str) -> None:
    response = TestClient(app).request(method, path)
    error = error_of(response, 401, "unauthenticated")
    assert "Authorization" in error["message"]
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("header", "says"),
    [
        ("Basic dXNlcjpwYXNz", "Malformed"),
        ("Bearer", "Malformed"),
        ("Bearer ", "Malformed"),
        ("Bearer a b", "Malformed"),
        ("Bearer not-a-key", "malformed"),
        ("Bearer sk_live_000000000000000000000000000000000000000000000000", "not recognised"),
    ],
)
def test_malformed_and_unknown_keys_are_401(app: object, header: str, says: str) -> None:
    response = TestClient(app).get("/v1/operators", headers={"Authorization": header})
    assert says in error_of(response, 401, "unauthenticated")["message"]


def test_a_revoked_key_is_401(app: object, state: store.StateStore, tenant: store.Tenant) -> None:
    key, secret = state.create_api_key(tenant.id, frozenset({"operators:read"}))
    client = TestClient(app, headers={"Authorization": f"Bearer {secret}"})
    assert client.get("/v1/operators").status_code == 200
    state.revoke_api_key(key.id)
    assert "revoked" in error_of(client.get("/v1/operators"), 401, "unauthenticated")["message"]


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/v1/operators", "operators:read"),
        ("POST", "/v1/operators", "operators:write"),
        ("GET", "/v1/operators/op_1", "operators:read"),
        ("DELETE", "/v1/operators/op_1", "operators:write"),
        ("GET", "/v1/connectors", "connectors:read"),
        ("GET", "/v1/connectors/cn_x", "connectors:read"),
        ("DELETE", "/v1/connectors/cn_x", "connectors:write"),
        ("GET", "/v1/webhooks", "webhooks:read"),
        ("POST", "/v1/webhooks", "webhooks:write"),
        ("DELETE", "/v1/webhooks/whk_1", "webhooks:write"),
        ("GET", "/v1/policies", "policies:read"),
        ("POST", "/v1/policies", "policies:write"),
        ("GET", "/v1/policies/pol_1", "policies:read"),
        ("DELETE", "/v1/policies/pol_1", "policies:write"),
        ("GET", "/v1/plans", "plans:read"),
        ("GET", "/v1/plans/pl_1", "plans:read"),
        ("POST", "/v1/plans/pl_1/approve", "plans:approve"),
        ("GET", "/v1/receipts", "receipts:read"),
        ("GET", "/v1/receipts/rc_1", "receipts:read"),
        ("GET", "/v1/events", "events:read"),
    ],
)
def test_a_key_without_the_routes_scope_is_403_naming_it(
    make_client: Callable[..., TestClient], tenant: store.Tenant, method: str, path: str, scope: str
) -> None:
    # events:write is unrelated to every route here, so each one must refuse.
    client = make_client(tenant, frozenset({"events:write"}))
    response = client.request(method, path, json={})
    error = error_of(response, 403, "insufficient_scope")
    assert f"'{scope}'" in error["message"]


def test_a_read_scope_does_not_grant_writes(
    make_client: Callable[..., TestClient], tenant: store.Tenant
) -> None:
    client = make_client(tenant, frozenset({"policies:read"}))
    assert client.get("/v1/policies").status_code == 200
    response = client.post("/v1/policies", json={"name": "guard", "rego": "package x"})
    assert "'policies:write'" in error_of(response, 403, "insufficient_scope")["message"]


def test_apply_needs_the_write_scope_of_every_kind_it_names(
    make_client: Callable[..., TestClient], tenant: store.Tenant
) -> None:
    client = make_client(tenant, frozenset({"policies:write"}))
    ok = client.post("/v1/apply", json={"documents": [policy_doc()]})
    assert ok.status_code == 200, ok.text
    operator = {"apiVersion": "fibric.io/v1", "kind": "Operator", "metadata": {"name": "op"},
                "spec": {"capabilities": ["a.b"], "policy": "guard"}}
    response = client.post("/v1/apply", json={"documents": [policy_doc(), operator]})
    assert "'operators:write'" in error_of(response, 403, "insufficient_scope")["message"]
    # Pruning may delete any kind of the set, so it needs all four write scopes.
    response = client.post("/v1/apply", json={"documents": [policy_doc()], "apply_set": "s",
                                              "prune": True})
    error_of(response, 403, "insufficient_scope")


def test_listing_every_kind_of_spec_needs_every_read_scope(
    make_client: Callable[..., TestClient], tenant: store.Tenant
) -> None:
    client = make_client(tenant, frozenset({"operators:read"}))
    assert client.get("/v1/specs", params={"kind": "Operator"}).status_code == 200
    error_of(client.get("/v1/specs"), 403, "insufficient_scope")
    response = client.get("/v1/specs", params={"kind": "Policy"})
    assert "'policies:read'" in error_of(response, 403, "insufficient_scope")["message"]


def test_the_tenant_comes_from_the_key_not_the_request(
    client: TestClient, other_client: TestClient
) -> None:
    response = client.post("/v1/apply", json={"documents": [policy_doc("acme-guard")]})
    assert response.status_code == 200
    # The other tenant sees none of it, whatever it puts in the query string.
    listed = other_client.get("/v1/policies", params={"tenant_id": "t_whatever"}).json()
    assert listed["data"] == []
    assert [p["name"] for p in client.get("/v1/policies").json()["data"]] == ["acme-guard"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/operators", None),  # a sync route
        ("GET", "/v1/operators?limit=0", None),  # answered before the route runs
        ("GET", "/v1/operators?cursor=nope", None),
        ("POST", "/v1/events", {"type": "bad type"}),  # a body that fails validation
        ("POST", "/v1/events", {"type": "a.b", "entity_key": "e", "idempotency_key": "k", "data": {}}),
        ("POST", "/v1/plans/pl_1/approve", {}),  # an async route
        ("GET", "/v1/specs", None),  # scopes checked inside the route
        ("POST", "/v1/apply", {"documents": [policy_doc()]}),
        ("GET", "/v1/receipts", None),  # a scope this key never had: still 401, not 403
    ],
)
def test_a_key_revoked_after_use_is_401_everywhere(
    app: object, state: store.StateStore, tenant: store.Tenant, method: str, path: str,
    body: object,
) -> None:
    scopes = frozenset(store.SCOPES) - {"receipts:read"}
    key, secret = state.create_api_key(tenant.id, scopes)
    client = TestClient(app, headers={"Authorization": f"Bearer {secret}"})
    assert client.get("/v1/webhooks").status_code == 200  # the app has seen the key valid
    state.revoke_api_key(key.id)
    for _ in range(2):
        response = client.request(method, path, json=body)
        assert "revoked" in error_of(response, 401, "unauthenticated")["message"]
    assert client.get("/v1/policies").status_code == 401
    assert state.list_api_keys(tenant.id)[0].revoked_at is not None


def test_a_revoked_key_stops_spending_its_tenants_budget(
    state: store.StateStore, tenant: store.Tenant, ledger: receipt_store.Ledger
) -> None:
    app = create_app(settings.Settings(rate_limits=settings.RateLimitSettings(reads_per_minute=5)),
                     state, receipts=ledger)
    leaked, leaked_secret = state.create_api_key(tenant.id, frozenset({"operators:read"}))
    _, good_secret = state.create_api_key(tenant.id, frozenset({"operators:read"}))
    bad = TestClient(app, headers={"Authorization": f"Bearer {leaked_secret}"})
    good = TestClient(app, headers={"Authorization": f"Bearer {good_secret}"})
    assert bad.get("/v1/operators").status_code == 200
    state.revoke_api_key(leaked.id)
    assert [bad.get("/v1/operators").status_code for _ in range(3)] == [401, 401, 401]
    # Only the first refused request was counted against the tenant.
    assert [good.get("/v1/operators").status_code for _ in range(4)] == [200, 200, 200, 429]


def test_every_v1_route_the_app_serves_refuses_a_request_without_a_key(app: object) -> None:
    """Built from the app's own OpenAPI document, not a hand-kept list: tomorrow's route is checked too."""
    import re

    paths = app.openapi()["paths"]  # type: ignore[attr-defined]
    served = sorted((method.upper(), re.sub(r"\{[^}]+\}", "x_1", path))
                    for path, operations in paths.items() if path.startswith("/v1/")
                    for method in operations)
    assert len(served) > len(ROUTES)
    client = TestClient(app)
    open_routes = [(method, path) for method, path in served
                   if client.request(method, path).status_code != 401]
    assert open_routes == []
