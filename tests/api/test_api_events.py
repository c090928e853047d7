"""POST /v1/events as the reference writes it: stamped from the key, deduplicated, even under concurrency."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from api_support import TestClient, error_of, fields_of
from live_server import serving

from fibric import store

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def event(key: str = "magento:SO-10884:v7", **changes: Any) -> dict[str, Any]:
    return {
        "type": "order.updated",
        "entity_key": "order:SO-10884",
        "idempotency_key": key,
        "occurred_at": "2026-06-14T08:58:00Z",
        "data": {"status": "open", "ship_by": "2026-06-15", "carrier_scanned": False},
        **changes,
    }


def test_ingest_answers_202_with_the_stored_envelope(client: TestClient, tenant: store.Tenant) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    response = client.post("/v1/events", json=event())
    assert response.status_code == 202, response.text
    body = response.json()
    assert re.fullmatch(r"ev_[0-9a-f]+", body["id"])
    assert body["object"] == "event"
    # Tenancy comes from the key, never from the body.
    assert body["reseller_id"] == tenant.reseller_id == "rs_fibric"
    assert body["tenant_id"] == tenant.id
    assert body["type"] == "order.updated"
    assert body["entity_key"] == "order:SO-10884"
    assert body["idempotency_key"] == "magento:SO-10884:v7"
    assert body["occurred_at"] == "2026-06-14T08:58:00Z"
    assert TIMESTAMP.match(body["received_at"])
    assert datetime.fromisoformat(body["received_at"]) >= before
    assert body["dedup"] is False


def test_occurred_at_defaults_to_the_time_received(client: TestClient) -> None:
    payload = event()
    del payload["occurred_at"]
    body = client.post("/v1/events", json=payload).json()
    assert body["occurred_at"] == body["received_at"]


def test_occurred_at_in_another_offset_is_stored_in_utc(client: TestClient) -> None:
    body = client.post("/v1/events", json=event(occurred_at="2026-06-14T10:58:00.250+02:00")).json()
    assert body["occurred_at"] == "2026-06-14T08:58:00Z"


def test_a_repeated_key_is_200_with_the_original_envelope(client: TestClient) -> None:
    first = client.post("/v1/events", json=event()).json()
    again = client.post("/v1/events", json=event(type="order.cancelled", data={"other": 1}))
    assert again.status_code == 200
    body = again.json()
    assert body["dedup"] is True
    assert {k: v for k, v in body.items() if k != "dedup"} == {
        k: v for k, v in first.items() if k != "dedup"}
    [stored] = client.get("/v1/events").json()["data"]
    assert stored["type"] == "order.updated"
    assert stored["data"] == event()["data"]


def test_idempotency_keys_are_per_tenant(client: TestClient, other_client: TestClient) -> None:
    ours = client.post("/v1/events", json=event())
    theirs = other_client.post("/v1/events", json=event())
    assert ours.status_code == theirs.status_code == 202
    assert ours.json()["id"] != theirs.json()["id"]
    assert ours.json()["tenant_id"] != theirs.json()["tenant_id"]


@pytest.fixture
def live(app: Any, state: store.StateStore, tenant: store.Tenant) -> Iterator[httpx.Client]:
    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    with serving(app) as url, httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {secret}"}, timeout=30,
        limits=httpx.Limits(max_connections=32),
    ) as http:
        yield http


def test_concurrent_ingests_of_one_key_store_one_event(live: httpx.Client) -> None:
    barrier = threading.Barrier(12)

    def send(n: int) -> httpx.Response:
        barrier.wait(timeout=10)
        return live.post("/v1/events", json=event(key="flood:1", data={"copy": n}))

    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(send, range(12)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 11 + [202], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert [r.json()["dedup"] for r in responses if r.status_code == 200] == [True] * 11
    assert len(live.get("/v1/events").json()["data"]) == 1


def test_a_walk_stays_exact_while_events_arrive(live: httpx.Client) -> None:
    existing = [live.post("/v1/events", json=event(key=f"old-{n}")).json()["id"] for n in range(45)]
    stop = threading.Event()
    added: list[str] = []

    def keep_inserting(worker: int) -> None:
        n = 0
        while not stop.is_set() and n < 60:
            response = live.post("/v1/events", json=event(key=f"new-{worker}-{n}"))
            assert response.status_code == 202, response.text
            added.append(response.json()["id"])
            n += 1

    threads = [threading.Thread(target=keep_inserting, args=(w,)) for w in range(3)]
    for thread in threads:
        thread.start()
    seen: list[str] = []
    cursor = None
    try:
        while True:
            params: dict[str, Any] = {"limit": 7, **({"cursor": cursor} if cursor else {})}
            body = live.get("/v1/events", params=params).json()
            seen.extend(e["id"] for e in body["data"])
            if not body["has_more"]:
                break
            cursor = body["next_cursor"]
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert len(seen) == len(set(seen)), "a page repeated an event"
    assert [e for e in seen if e in set(existing)] == existing[::-1], "an event was skipped or moved"
    assert set(seen) - set(existing) <= set(added)


@pytest.mark.parametrize("field", ["tenant_id", "reseller_id"])
def test_a_body_naming_the_tenant_is_400_and_stores_nothing(client: TestClient, field: str) -> None:
    response = client.post("/v1/events", json=event(**{field: "t_someone_else"}))
    error = error_of(response, 400, "invalid_request")
    assert fields_of(error) == [field]
    assert "API key" in error["fields"][0]["message"]
    assert client.get("/v1/events").json()["data"] == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": None}, "type"),
        ({"type": "order updated"}, "type"),
        ({"type": ""}, "type"),
        ({"entity_key": ""}, "entity_key"),
        ({"entity_key": "order:\n1"}, "entity_key"),
        ({"idempotency_key": "k" * 256}, "idempotency_key"),
        ({"idempotency_key": 7}, "idempotency_key"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"occurred_at": "2026-06-14T08:58:00"}, "occurred_at"),
        ({"occurred_at": "2026-13-01T00:00:00Z"}, "occurred_at"),
        ({"occurred_at": "9999-12-31T23:00:00-05:00"}, "occurred_at"),
        ({"occurred_at": 1718355480}, "occurred_at"),
        ({"data": "open"}, "data"),
        ({"data": None}, "data"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_field_is_400_naming_it(client: TestClient, change: dict[str, Any], field: str) -> None:
    payload = {k: v for k, v in event(**change).items() if v is not None}
    error = error_of(client.post("/v1/events", json=payload), 400, "invalid_request")
    assert field in fields_of(error)
    assert error["message"].startswith(field)
    assert client.get("/v1/events").json()["data"] == []


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type": "a.b", "entity_key": "e", "idempotency_key": "k", "data": {"v": NaN}}',
        b'{"type": "a.b", "entity_key": "e", "idempotency_key": "k", "data": {"v": -Infinity}}',
        b'{"type": "a.b", "entity_key": "e", "idempotency_key": "k", "data": {"v": "\\ud800"}}',
        b'{"type": "a.b", "entity_key": "e", "idempotency_key": "k", "data": {"\\udc00": 1}}',
        b'{"type": "a.b", "entity_key": "e", "idempotency_key": "k", "data": {"v": "\xff"}}',
        b'{"type": "a.b", "entity_key": "e", "idempotency_key": "k", "data": ' + b"[" * 20_000 + b"}",
    ],
)
def test_json_that_is_not_interoperable_is_400(client: TestClient, raw: bytes) -> None:
    response = client.post("/v1/events", content=raw, headers={"Content-Type": "application/json"})
    error_of(response, 400, "invalid_request")
    assert client.get("/v1/events").json()["data"] == []


def test_a_pair_of_surrogate_escapes_is_one_character(client: TestClient) -> None:
    raw = b'{"type": "a.b", "entity_key": "e", "idempotency_key": "k", "data": {"v": "\\ud83d\\ude00"}}'
    response = client.post("/v1/events", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 202, response.text
    assert client.get(f"/v1/events/{response.json()['id']}").json()["data"] == {"v": "\N{GRINNING FACE}"}


def test_read_events_back_newest_first(client: TestClient) -> None:
    ids = [client.post("/v1/events", json=event(key=f"k{n}", entity_key=f"order:{n % 2}")).json()["id"]
           for n in range(5)]
    listed = client.get("/v1/events").json()
    assert listed["object"] == "list" and listed["has_more"] is False
    assert [e["id"] for e in listed["data"]] == ids[::-1]
    assert listed["data"][0]["data"] == event()["data"]
    assert "dedup" not in listed["data"][0]
    odd = client.get("/v1/events", params={"entity_key": "order:1"}).json()["data"]
    assert [e["id"] for e in odd] == [ids[3], ids[1]]
    assert client.get("/v1/events", params={"type": "sensor.reading"}).json()["data"] == []
    one = client.get(f"/v1/events/{ids[0]}").json()
    assert one["id"] == ids[0] and one["idempotency_key"] == "k0"


def test_another_tenants_event_reads_as_not_found(client: TestClient, other_client: TestClient) -> None:
    theirs = other_client.post("/v1/events", json=event()).json()["id"]
    foreign = client.get(f"/v1/events/{theirs}")
    missing = client.get("/v1/events/ev_0000000000000000")
    assert error_of(foreign, 404, "not_found")["message"].replace(theirs, "<id>") == \
        error_of(missing, 404, "not_found")["message"].replace("ev_0000000000000000", "<id>")
    assert client.get("/v1/events").json()["data"] == []


@pytest.mark.parametrize(("method", "path", "scope"), [
    ("POST", "/v1/events", "events:write"),
    ("GET", "/v1/events", "events:read"),
    ("GET", "/v1/events/ev_1", "events:read"),
])
def test_events_need_their_scopes(
    make_client: Callable[..., TestClient], tenant: store.Tenant, method: str, path: str, scope: str
) -> None:
    others = frozenset(store.SCOPES) - {scope}
    response = make_client(tenant, others).request(method, path, json=event())
    assert f"'{scope}'" in error_of(response, 403, "insufficient_scope")["message"]


def test_received_at_is_the_servers_clock(client: TestClient) -> None:
    body = client.post("/v1/events", json=event(occurred_at="2020-01-01T00:00:00Z")).json()
    received = datetime.fromisoformat(body["received_at"])
    assert abs(received - datetime.now(UTC)) < timedelta(minutes=1)
    assert body["occurred_at"] == "2020-01-01T00:00:00Z"
