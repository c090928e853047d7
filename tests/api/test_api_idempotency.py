"""The Idempotency-Key header, with Stripe's semantics, stored in the state store (both backends)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from api_support import MAX_BODY, Executor, Recorder, TestClient, action, error_of, fields_of
from live_server import serving

from fibric import settings, store
from fibric.api import create_app
from fibric.store import plan_store, receipt_store

REGO = "package fibric.guard\n"


def policy(name: str = "guard") -> dict[str, Any]:
    return {"name": name, "rego": REGO}


def stored(state: store.StateStore, key: str) -> list[tuple[Any, ...]]:
    with state.backend.transaction(write=False) as cur:
        cur.execute("SELECT tenant_id, state, response_status, created_at, expires_at"
                    " FROM idempotency_keys WHERE idempotency_key = ?", (key,))
        return [tuple(r) for r in cur.fetchall()]


def set_record(db: store.StateStore, key: str, **columns: str) -> None:
    assignments = ", ".join(f"{c} = ?" for c in columns)
    with db.backend.transaction(write=True) as cur:
        cur.execute(f"UPDATE idempotency_keys SET {assignments} WHERE idempotency_key = ?",
                    (*columns.values(), key))


def stamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def test_a_retry_replays_the_first_response(client: TestClient) -> None:
    first = client.post("/v1/policies", json=policy(), headers={"Idempotency-Key": "create-guard"})
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    again = client.post("/v1/policies", json=policy(), headers={"Idempotency-Key": "create-guard"})
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["Request-Id"] == first.headers["Request-Id"]
    assert again.headers["RateLimit-Limit"] == "120"
    assert len(client.get("/v1/policies").json()["data"]) == 1


def test_the_same_json_in_another_key_order_is_the_same_request(client: TestClient) -> None:
    headers = {"Idempotency-Key": "k", "Content-Type": "application/json"}
    first = client.post("/v1/policies", content=b'{"name": "guard", "rego": "package x"}', headers=headers)
    again = client.post("/v1/policies", content=b'{"rego":"package x","name":"guard"}', headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/policies", policy("other")),
    ("/v1/policies?dry=1", policy()),
    ("/v1/webhooks", {"url": "https://a.example/h", "events": ["plan.proposed"]}),
])
def test_the_same_key_with_different_parameters_is_400(
    client: TestClient, path: str, body: dict[str, Any]
) -> None:
    assert client.post("/v1/policies", json=policy(), headers={"Idempotency-Key": "k1"}).status_code == 201
    response = client.post(path, json=body, headers={"Idempotency-Key": "k1"})
    error = error_of(response, 400, "invalid_request")
    assert "different parameters" in error["message"]
    assert fields_of(error) == ["Idempotency-Key"]
    assert [p["name"] for p in client.get("/v1/policies").json()["data"]] == ["guard"]


@pytest.mark.parametrize(("key", "ok"), [("k" * 255, True), ("k" * 256, False), ("", False),
                                         ("tab\there", False)])
def test_keys_are_up_to_255_printable_characters(client: TestClient, key: str, ok: bool) -> None:
    response = client.post("/v1/policies", json=policy(), headers={"Idempotency-Key": key})
    if ok:
        assert response.status_code == 201
    else:
        assert fields_of(error_of(response, 400, "invalid_request")) == ["Idempotency-Key"]
        assert client.get("/v1/policies").json()["data"] == []


def test_a_request_that_failed_validation_saves_nothing(client: TestClient, state: store.StateStore) -> None:
    bad = client.post("/v1/policies", json={"name": "Not A Slug", "rego": REGO},
                      headers={"Idempotency-Key": "k"})
    error_of(bad, 400, "invalid_request")
    assert stored(state, "k") == []
    fixed = client.post("/v1/policies", json=policy(), headers={"Idempotency-Key": "k"})
    assert fixed.status_code == 201
    assert "Idempotent-Replayed" not in fixed.headers


def test_a_request_that_changed_nothing_saves_nothing(client: TestClient, state: store.StateStore) -> None:
    assert client.post("/v1/policies", json=policy()).status_code == 201
    taken = client.post("/v1/policies", json=policy(), headers={"Idempotency-Key": "k"})
    error_of(taken, 409, "conflict")
    assert stored(state, "k") == []
    assert client.delete("/v1/policies/guard").status_code == 200
    retried = client.post("/v1/policies", json=policy(), headers={"Idempotency-Key": "k"})
    assert retried.status_code == 201


def test_a_rate_limited_request_saves_nothing(
    state: store.StateStore, tenant: store.Tenant, ledger: receipt_store.Ledger
) -> None:
    limited = settings.Settings(rate_limits=settings.RateLimitSettings(writes_per_minute=1))
    app = create_app(limited, state, receipts=ledger)
    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    client = TestClient(app, headers={"Authorization": f"Bearer {secret}"})
    assert client.post("/v1/policies", json=policy("first")).status_code == 201
    response = client.post("/v1/policies", json=policy(), headers={"Idempotency-Key": "k"})
    error_of(response, 429, "rate_limited")
    assert stored(state, "k") == []
    # Another replica (its own counters, the same store) runs the request afresh.
    other = TestClient(create_app(settings.Settings(), state, receipts=ledger),
                       headers={"Authorization": f"Bearer {secret}"})
    retried = other.post("/v1/policies", json=policy(), headers={"Idempotency-Key": "k"})
    assert retried.status_code == 201 and "Idempotent-Replayed" not in retried.headers


def test_keys_are_per_tenant(client: TestClient, other_client: TestClient) -> None:
    ours = client.post("/v1/policies", json=policy("ours"), headers={"Idempotency-Key": "shared"})
    theirs = other_client.post("/v1/policies", json=policy("theirs"), headers={"Idempotency-Key": "shared"})
    assert ours.status_code == theirs.status_code == 201
    assert "Idempotent-Replayed" not in theirs.headers
    assert theirs.json()["name"] == "theirs"
    assert [p["name"] for p in other_client.get("/v1/policies").json()["data"]] == ["theirs"]


def test_a_response_is_kept_at_least_24_hours(client: TestClient, state: store.StateStore) -> None:
    client.post("/v1/policies", json=policy(), headers={"Idempotency-Key": "k"})
    [(_, status, code, created, expires)] = stored(state, "k")
    assert (status, code) == ("done", 201)
    assert datetime.fromisoformat(expires) - datetime.fromisoformat(created) >= timedelta(hours=24)


def test_an_expired_key_can_be_used_again(client: TestClient, state: store.StateStore) -> None:
    client.post("/v1/policies", json=policy(), headers={"Idempotency-Key": "k"})
    set_record(state, "k", expires_at=stamp(datetime.now(UTC) - timedelta(seconds=1)))
    fresh = client.post("/v1/policies", json=policy("other"), headers={"Idempotency-Key": "k"})
    assert fresh.status_code == 201 and fresh.json()["name"] == "other"


def test_a_key_still_running_is_409_and_an_abandoned_one_is_taken_over(
    client: TestClient, state: store.StateStore
) -> None:
    event = {"type": "order.updated", "entity_key": "order:1", "idempotency_key": "e1", "data": {}}
    assert client.post("/v1/events", json=event, headers={"Idempotency-Key": "k"}).status_code == 202
    # As if a request holding the key were running now (in this or another process):
    set_record(state, "k", state="running", locked_until=stamp(datetime.now(UTC) + timedelta(minutes=1)))
    error_of(client.post("/v1/events", json=event, headers={"Idempotency-Key": "k"}), 409, "conflict")
    # As if the process running it had died long ago: the retry runs again.
    set_record(state, "k", locked_until=stamp(datetime.now(UTC) - timedelta(seconds=1)))
    retried = client.post("/v1/events", json=event, headers={"Idempotency-Key": "k"})
    assert retried.status_code == 200 and retried.json()["dedup"] is True
    assert "Idempotent-Replayed" not in retried.headers


class SlowExecutor(Executor):
    """Holds every approval until released, so a second request meets the first in flight."""

    def __init__(self, state: store.StateStore, ledger: receipt_store.Ledger) -> None:
        super().__init__(state, ledger)
        self.entered = threading.Event()
        self.release = threading.Event()

    def execute(self, plan: plan_store.Plan, *, only_actions: Sequence[str] | None) -> plan_store.Plan:
        self.entered.set()
        assert self.release.wait(timeout=20)
        return super().execute(plan, only_actions=only_actions)


@pytest.fixture
def http(app: Any, state: store.StateStore, tenant: store.Tenant) -> Iterator[httpx.Client]:
    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    with serving(app) as url, httpx.Client(base_url=url, timeout=30,
                                           headers={"Authorization": f"Bearer {secret}"}) as client:
        yield client


def test_a_concurrent_request_with_a_running_key_is_409(
    app: Any, http: httpx.Client, state: store.StateStore, tenant: store.Tenant, ledger: receipt_store.Ledger
) -> None:
    executor = SlowExecutor(state, ledger)
    app.state.executor = executor
    plan = plan_store.propose(state, tenant.id, operator_id="op_1", actions=[action("a.b", "k1")],
                              policy_id=None)
    headers = {"Idempotency-Key": f"approve-{plan.id}"}
    results: list[httpx.Response] = []
    first = threading.Thread(target=lambda: results.append(
        http.post(f"/v1/plans/{plan.id}/approve", json={"approver": "ops"}, headers=headers)))
    first.start()
    try:
        assert executor.entered.wait(timeout=20)
        second = http.post(f"/v1/plans/{plan.id}/approve", json={"approver": "ops"}, headers=headers)
        assert "still being processed" in error_of(second, 409, "conflict")["message"]
        assert second.headers["Retry-After"] == "1"  # "wait and repeat", unlike other conflicts
    finally:
        executor.release.set()
        first.join(timeout=30)
    [done] = results
    assert done.status_code == 200 and done.json()["status"] == "executed"
    replay = http.post(f"/v1/plans/{plan.id}/approve", json={"approver": "ops"}, headers=headers)
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == done.json()
    assert len(executor.calls) == 1


def test_keys_are_shared_by_every_replica_of_the_store(
    store_location: str, tenant: store.Tenant, ledger: receipt_store.Ledger, state: store.StateStore
) -> None:
    config = settings.Settings(server=settings.ServerSettings(max_body_bytes=MAX_BODY))
    other_process_store = store.open_store(store_location)
    try:
        _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
        headers = {"Authorization": f"Bearer {secret}", "Idempotency-Key": "k"}
        one = TestClient(create_app(config, state, Recorder(), receipts=ledger), headers=headers)
        two = TestClient(create_app(config, other_process_store, Recorder(), receipts=ledger),
                         headers=headers)
        first = one.post("/v1/policies", json=policy())
        again = two.post("/v1/policies", json=policy())
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()
        error_of(two.post("/v1/policies", json=policy("other")), 400, "invalid_request")
    finally:
        other_process_store.close()


def test_the_header_is_ignored_on_reads(client: TestClient, state: store.StateStore) -> None:
    for _ in range(2):
        response = client.get("/v1/policies", headers={"Idempotency-Key": "k"})
        assert response.status_code == 200 and "Idempotent-Replayed" not in response.headers
    assert stored(state, "k") == []


def test_an_event_retried_with_the_header_replays_202(client: TestClient) -> None:
    event = {"type": "order.updated", "entity_key": "order:1", "idempotency_key": "e1", "data": {}}
    first = client.post("/v1/events", json=event, headers={"Idempotency-Key": "k"})
    again = client.post("/v1/events", json=event, headers={"Idempotency-Key": "k"})
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.json()["dedup"] is False
    # Without the header, the body's idempotency_key still deduplicates.
    assert client.post("/v1/events", json=event).json()["dedup"] is True


def test_a_revoked_key_never_reads_a_stored_answer(
    app: Any, state: store.StateStore, tenant: store.Tenant
) -> None:
    key, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    client = TestClient(app, headers={"Authorization": f"Bearer {secret}", "Idempotency-Key": "k"})
    created = client.post("/v1/webhooks", json={"url": "https://a.example/h", "events": ["plan.proposed"]})
    assert created.status_code == 201 and created.json()["signing_secret"]
    state.revoke_api_key(key.id)
    again = client.post("/v1/webhooks", json={"url": "https://a.example/h", "events": ["plan.proposed"]})
    assert "revoked" in error_of(again, 401, "unauthenticated")["message"]
    assert created.json()["signing_secret"] not in again.text
    assert "Idempotent-Replayed" not in again.headers
