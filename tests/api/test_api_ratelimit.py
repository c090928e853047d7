"""Rate limits per tenant and route class: RateLimit headers on every response, 429 with Retry-After."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from typing import Any

import pytest
from api_support import MAX_BODY, TestClient, error_of

from fibric import settings, store
from fibric.api import create_app
from fibric.store import receipt_store

REDIS_URL = os.environ.get("FIBRIC_TEST_REDIS_URL")
needs_redis = pytest.mark.skipif(not REDIS_URL,
                                 reason="FIBRIC_TEST_REDIS_URL is not set; Redis tests skipped")
EVENT = {"type": "order.updated", "entity_key": "order:1", "idempotency_key": "e", "data": {}}


def budget(response: Any) -> tuple[int, int, int]:
    headers = response.headers
    return (int(headers["RateLimit-Limit"]), int(headers["RateLimit-Remaining"]),
            int(headers["RateLimit-Reset"]))


@pytest.fixture
def build(state: store.StateStore, ledger: receipt_store.Ledger) -> Callable[..., Any]:
    """An app over the shared store with these rate-limit settings."""

    def make(**limits: Any) -> Any:
        config = settings.Settings(server=settings.ServerSettings(max_body_bytes=MAX_BODY),
                                   rate_limits=settings.RateLimitSettings(**limits))
        return create_app(config, state, receipts=ledger)

    return make


def keyed(app: Any, state: store.StateStore, tenant: store.Tenant) -> TestClient:
    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    return TestClient(app, headers={"Authorization": f"Bearer {secret}"})


def test_every_response_carries_the_budget_of_its_route_class(client: TestClient, app: Any) -> None:
    responses = {
        "read": client.get("/v1/operators"),
        "missing": client.get("/v1/operators/op_missing"),
        "unknown route": client.get("/v1/nowhere"),
        "bad query": client.get("/v1/operators", params={"limit": 0}),
        "openapi": client.get("/v1/openapi.json"),
        "write": client.post("/v1/policies", json={"name": "g", "rego": "package x"}),
        "bad write": client.post("/v1/policies", content=b"{", headers={"Content-Type": "application/json"}),
        "too large": client.post("/v1/policies", content=b"x" * (MAX_BODY + 1)),
        "event": client.post("/v1/events", json=EVENT),
        "no key": TestClient(app).get("/v1/operators"),
    }
    for name, response in responses.items():
        limit, remaining, reset = budget(response)
        assert 0 < reset <= 60, name
        assert 0 <= remaining < limit, name
    assert budget(responses["read"])[0] == 1000
    assert budget(responses["write"])[0] == 120
    assert budget(responses["event"])[0] == 600
    # One budget per class: reads counted 5 times so far, writes 3, events 1.
    assert budget(responses["openapi"])[1] == 1000 - 5
    assert budget(responses["too large"])[1] == 120 - 3
    assert budget(responses["event"])[1] == 600 - 1


def test_over_the_limit_is_429_with_retry_after(
    build: Callable[..., Any], state: store.StateStore, tenant: store.Tenant
) -> None:
    client = keyed(build(writes_per_minute=2), state, tenant)
    for name in ("a", "b"):
        assert client.post("/v1/policies", json={"name": name, "rego": "package x"}).status_code == 201
    response = client.post("/v1/policies", json={"name": "c", "rego": "package x"})
    error = error_of(response, 429, "rate_limited")
    assert "2 writes per minute" in error["message"]
    limit, remaining, reset = budget(response)
    assert (limit, remaining) == (2, 0)
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert int(response.headers["Retry-After"]) == max(1, reset)
    # Nothing was written, and reads have their own budget.
    listed = client.get("/v1/policies")
    assert [p["name"] for p in listed.json()["data"]] == ["b", "a"]


def test_events_have_their_own_budget(
    build: Callable[..., Any], state: store.StateStore, tenant: store.Tenant
) -> None:
    client = keyed(build(events_per_minute=1, writes_per_minute=100), state, tenant)
    assert client.post("/v1/events", json=EVENT).status_code == 202
    error_of(client.post("/v1/events", json={**EVENT, "idempotency_key": "f"}), 429, "rate_limited")
    assert client.post("/v1/policies", json={"name": "g", "rego": "package x"}).status_code == 201


def test_budgets_are_per_tenant_with_overrides(
    build: Callable[..., Any], state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant
) -> None:
    app = build(reads_per_minute=3, overrides={other_tenant.id: {"reads": 5}})
    ours, theirs = keyed(app, state, tenant), keyed(app, state, other_tenant)
    assert [ours.get("/v1/operators").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert [theirs.get("/v1/operators").status_code for _ in range(6)] == [200] * 5 + [429]
    assert budget(theirs.get("/v1/webhooks"))[0] == 5
    # A second key of the same tenant spends the same budget.
    assert keyed(app, state, tenant).get("/v1/operators").status_code == 429


def test_requests_without_a_valid_key_are_limited_per_address(build: Callable[..., Any]) -> None:
    anonymous = TestClient(build(reads_per_minute=2))
    statuses = [anonymous.get("/v1/operators", headers={"Authorization": "Bearer sk_live_nope"}).status_code
                for _ in range(3)]
    assert statuses == [401, 401, 429]


def test_settings_read_limits_and_overrides_from_the_environment() -> None:
    config = settings.Settings.from_env({
        "FIBRIC_RATE_LIMIT_WRITES": "300",
        "FIBRIC_RATE_LIMIT_OVERRIDES": "t_1:events=1200, reads=5000; t_2:writes=10",
        "FIBRIC_REDIS_URL": "redis://127.0.0.1:6379/0",
    }).rate_limits
    assert (config.per_minute("t_9", "writes"), config.per_minute("t_9", "reads")) == (300, 1000)
    assert (config.per_minute("t_1", "events"), config.per_minute("t_1", "reads")) == (1200, 5000)
    assert config.per_minute("t_2", "writes") == 10
    assert config.redis_url == "redis://127.0.0.1:6379/0"
    with pytest.raises(ValueError, match="unknown route class"):
        settings.Settings.from_env({"FIBRIC_RATE_LIMIT_OVERRIDES": "t_1:deletes=1"})


def test_replicas_with_their_own_counters_do_not_share_a_budget(
    build: Callable[..., Any], state: store.StateStore, tenant: store.Tenant
) -> None:
    one = keyed(build(reads_per_minute=1), state, tenant)
    two = keyed(build(reads_per_minute=1), state, tenant)
    assert [one.get("/v1/operators").status_code, two.get("/v1/operators").status_code] == [200, 200]


@needs_redis
def test_replicas_sharing_redis_share_one_budget(
    build: Callable[..., Any], state: store.StateStore, tenant: store.Tenant
) -> None:
    assert REDIS_URL
    one = keyed(build(reads_per_minute=3, redis_url=REDIS_URL), state, tenant)
    two = keyed(build(reads_per_minute=3, redis_url=REDIS_URL), state, tenant)
    assert one.get("/v1/operators").status_code == 200
    assert two.get("/v1/operators").status_code == 200
    response = one.get("/v1/operators")
    assert response.status_code == 200 and budget(response)[:2] == (3, 0)
    limited = two.get("/v1/operators")
    error_of(limited, 429, "rate_limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60


@needs_redis
def test_redis_counts_per_tenant_and_class(
    build: Callable[..., Any], state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant
) -> None:
    assert REDIS_URL
    app = build(writes_per_minute=1, redis_url=REDIS_URL)
    ours, theirs = keyed(app, state, tenant), keyed(app, state, other_tenant)
    name = "p" + secrets.token_hex(3)
    assert ours.post("/v1/policies", json={"name": name, "rego": "package x"}).status_code == 201
    error_of(ours.post("/v1/policies", json={"name": name + "x", "rego": "package x"}), 429, "rate_limited")
    assert theirs.post("/v1/policies", json={"name": name, "rego": "package x"}).status_code == 201
    assert budget(ours.get("/v1/policies"))[0] == 1000


def test_unreachable_counters_let_requests_through(
    build: Callable[..., Any], state: store.StateStore, tenant: store.Tenant
) -> None:
    client = keyed(build(reads_per_minute=1, redis_url="redis://127.0.0.1:1/0"), state, tenant)
    for _ in range(3):
        response = client.get("/v1/operators")
        assert response.status_code == 200
        assert "RateLimit-Limit" not in response.headers
