"""The additive webhook routes: rotate, disable/enable, test event, deliveries with their attempts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from webhook_support import KEY, Clock, Receiver, TestClient, client_for, dispatching

from fibric import settings, store, webhooks

pytestmark = pytest.mark.anyio


@pytest.fixture
def client(state: store.StateStore, tenant: store.Tenant, tmp_path: Path) -> Iterator[TestClient]:
    config = settings.Settings(webhooks=settings.WebhookSettings(allow_http_and_private=True, secret_key=KEY))
    with client_for(state, tenant, tmp_path, config) as c:
        yield c


def created(client: TestClient, url: str, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/webhooks", json={"url": url, "events": ["plan.proposed"], **body})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_send_a_test_event_and_read_its_delivery_with_attempts(
    client: TestClient, state: store.StateStore, receiver: Receiver, clock: Clock
) -> None:
    hook = created(client, receiver.url)
    receiver.answer(500)
    response = client.post(f"/v1/webhooks/{hook['id']}/test")
    assert response.status_code == 202, response.text
    queued = response.json()
    assert queued["object"] == "webhook_delivery" and queued["id"].startswith("dlv_")
    assert (queued["event_type"], queued["status"], queued["attempts"]) == ("webhook.test", "pending", [])

    clock.pass_wall_clock()  # the route stamped the delivery with the wall clock, after the fixture's
    async with dispatching(state, clock) as service:
        await service.run_once()
        clock.advance(hours=1)
        await service.run_once()
    failed, second = receiver.received
    assert failed.body == second.body
    event = webhooks.verify(second.body, second.headers["Fibric-Signature"], hook["signing_secret"])
    assert event["type"] == "webhook.test" and event["data"]["webhook_id"] == hook["id"]

    listed = client.get(f"/v1/webhooks/{hook['id']}/deliveries").json()
    [delivery] = listed["data"]
    assert delivery["id"] == queued["id"] and delivery["status"] == "delivered"
    assert delivery["attempt_count"] == 2 and delivery["event_id"] == event["id"]
    assert [(a["number"], a["status_code"]) for a in delivery["attempts"]] == [(1, 500), (2, 200)]
    assert all(a["at"].endswith("Z") and a["duration_ms"] >= 0 for a in delivery["attempts"])
    one = client.get(f"/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}").json()
    assert one == delivery
    assert client.get(f"/v1/webhooks/{hook['id']}/deliveries?status=pending").json()["data"] == []


def test_rotate_shows_the_new_secret_once_and_keeps_the_old_for_the_grace_period(
    client: TestClient, state: store.StateStore, tenant: store.Tenant
) -> None:
    hook = created(client, "https://hooks.example/h")
    response = client.post(f"/v1/webhooks/{hook['id']}/rotate_secret", json={"grace_period_seconds": 600})
    assert response.status_code == 200, response.text
    rotated = response.json()
    new = rotated["signing_secret"]
    assert new.startswith("whsec_") and new != hook["signing_secret"]
    assert rotated["previous_secret_expires_at"].endswith("Z")
    for path in ("/v1/webhooks", f"/v1/webhooks/{hook['id']}", "/v1/specs"):
        text = client.get(path).text
        assert new not in text and hook["signing_secret"] not in text
    # Stored sealed, never as the secret itself.
    stored = state.get_object(tenant.id, "Webhook", hook["id"]).secret or ""
    assert new not in stored and hook["signing_secret"] not in stored

    ended = client.post(f"/v1/webhooks/{hook['id']}/rotate_secret", json={"grace_period_seconds": 0})
    assert ended.json()["previous_secret_expires_at"] is None
    bad = client.post(f"/v1/webhooks/{hook['id']}/rotate_secret", json={"grace_period_seconds": -1})
    assert bad.status_code == 400 and "grace_period_seconds" in bad.text


def test_a_tenant_secret_webhook_is_rotated_with_its_secret(client: TestClient) -> None:
    document = {"apiVersion": "fibric.io/v1", "kind": "Webhook", "metadata": {"name": "ref-hook"},
                "spec": {"url": "https://hooks.example/h", "events": ["plan.proposed"],
                         "secret_ref": "ops-hook-secret"}}
    assert client.post("/v1/apply", json={"documents": [document]}).status_code == 200
    response = client.post("/v1/webhooks/ref-hook/rotate_secret")
    assert response.status_code == 409
    assert "fibric secret set" in response.json()["error"]["message"]


def test_disable_and_enable(client: TestClient, state: store.StateStore, tenant: store.Tenant) -> None:
    hook = created(client, "https://hooks.example/h")
    disabled = client.post(f"/v1/webhooks/{hook['id']}/disable").json()
    assert (disabled["status"], disabled["disabled_reason"]) == ("disabled", "spec.enabled is false")
    assert disabled["generation"] == 2
    assert client.post(f"/v1/webhooks/{hook['id']}/test").status_code == 409
    assert client.get("/v1/webhooks").json()["data"][0]["status"] == "disabled"
    enabled = client.post(f"/v1/webhooks/{hook['id']}/enable").json()
    assert (enabled["status"], enabled["disabled_reason"], enabled["generation"]) == ("enabled", None, 3)


def test_enable_clears_a_dispatcher_disabling(
    client: TestClient, state: store.StateStore, tenant: store.Tenant
) -> None:
    from fibric.store import webhook_store
    from fibric.timefmt import now

    hook = created(client, "https://hooks.example/h")
    with state.backend.transaction(write=True) as cur:
        endpoint = webhook_store.get(cur, tenant.id, hook["id"])
        assert endpoint is not None
        webhook_store.disable(cur, endpoint, now(), "the endpoint answered 410 Gone")
    shown = client.get(f"/v1/webhooks/{hook['id']}").json()
    assert (shown["status"], shown["disabled_reason"]) == ("disabled", "the endpoint answered 410 Gone")
    enabled = client.post(f"/v1/webhooks/{hook['id']}/enable").json()
    assert enabled["status"] == "enabled" and enabled["generation"] == 1  # the spec did not change


def test_another_tenants_webhook_reads_as_404(
    client: TestClient, state: store.StateStore, other_tenant: store.Tenant, tmp_path: Path
) -> None:
    hook = created(client, "https://hooks.example/h")
    with client_for(state, other_tenant, tmp_path / "other", settings.Settings()) as other:
        for method, path in (("POST", "rotate_secret"), ("POST", "disable"), ("POST", "enable"),
                             ("POST", "test"), ("GET", "deliveries")):
            response = other.request(method, f"/v1/webhooks/{hook['id']}/{path}")
            assert response.status_code == 404, (path, response.text)
            assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("path", ["/v1/webhooks", "/v1/apply"])
def test_a_replayed_create_shows_the_secret_again_but_never_stores_it_in_plaintext(
    client: TestClient, state: store.StateStore, path: str
) -> None:
    if path == "/v1/webhooks":
        body: dict[str, Any] = {"url": "https://hooks.example/h", "events": ["plan.proposed"]}
    else:
        body = {"documents": [{"apiVersion": "fibric.io/v1", "kind": "Webhook", "metadata": {"name": "h"},
                               "spec": {"url": "https://hooks.example/h", "events": ["plan.proposed"]}}]}
    headers = {"Idempotency-Key": "create-hook-1"}
    first = client.post(path, json=body, headers=headers)
    again = client.post(path, json=body, headers=headers)
    assert first.status_code in (200, 201) and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    secret = first.text.split('"signing_secret":"', 1)[1].split('"', 1)[0]
    assert secret.startswith("whsec_")
    with state.backend.transaction(write=False) as cur:
        cur.execute("SELECT response_body FROM idempotency_keys")
        stored = " ".join(str(r[0]) for r in cur.fetchall())
    assert stored and secret not in stored


async def test_the_typed_client_drives_every_webhook_route(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path, receiver: Receiver, clock: Clock
) -> None:
    from live_server import serving

    from fibric import client as fibric_client
    from fibric.api import create_app

    config = settings.Settings(webhooks=settings.WebhookSettings(allow_http_and_private=True, secret_key=KEY),
                               store=settings.StoreSettings(data_dir=tmp_path / "data"))
    _, key = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    with serving(create_app(config, state, None)) as url, \
            fibric_client.Client(url, key) as api:
        hook = api.create_webhook(receiver.url, ["plan.proposed"], name="ops")
        rotated = api.rotate_webhook_secret("ops", grace_period_seconds=60)
        assert rotated["signing_secret"] != hook["signing_secret"]
        assert api.disable_webhook("ops")["status"] == "disabled"
        assert api.enable_webhook("ops")["status"] == "enabled"
        queued = api.test_webhook("ops")
        clock.pass_wall_clock()
        async with dispatching(state, clock) as service:
            await service.run_once()
        [delivery] = api.list_webhook_deliveries("ops")
        assert delivery["id"] == queued["id"] and delivery["status"] == "delivered"
        assert api.list_webhook_deliveries("ops", status="failed") == []
        assert api.delete_webhook("ops")["deleted"] is True
    [got] = receiver.received
    assert got.headers["Fibric-Signature"].count("v1=") == 2  # within the rotation's grace period
    webhooks.verify(got.body, got.headers["Fibric-Signature"], rotated["signing_secret"])
    webhooks.verify(got.body, got.headers["Fibric-Signature"], hook["signing_secret"])
