"""Deliveries against a real HTTP receiver on loopback, on both store backends.

The dispatcher's clock is injected: a test moves it past a backoff instead of
waiting, and `run_once` is one pass of exactly what the running service does.
"""

from __future__ import annotations

import asyncio
import json
import random
from datetime import timedelta

import pytest
import standardwebhooks
from webhook_support import Clock, Receiver, box, create_webhook, dispatcher, dispatching

from fibric import errors, store, webhooks
from fibric.controller import dispatch, reconcile
from fibric.store import deliveries, outbox, plan_store, views, webhook_store

pytestmark = pytest.mark.anyio


def propose(state: store.StateStore, tenant: store.Tenant) -> plan_store.Plan:
    action = {"capability": "orders.hold", "entity_key": "order:1", "idempotency_key": "k1",
              "args": {}, "decision": "ALLOW"}
    return plan_store.propose(state, tenant.id, operator_id="op_1", actions=[action], policy_id=None)


def only_delivery(state: store.StateStore, webhook: store.StoredObject) -> deliveries.Delivery:
    [item] = deliveries.list_deliveries(state, webhook.tenant_id, webhook.id)
    return item


async def test_a_proposed_plan_is_delivered_signed_and_verifiable(
    state: store.StateStore, tenant: store.Tenant, receiver: Receiver
) -> None:
    webhook, secret = create_webhook(state, tenant, receiver.url)
    assert secret is not None
    service = dispatcher(state, clock=None)
    service.clock = dispatch.timefmt.now
    await service.start()
    try:
        plan = propose(state, tenant)
        [got] = await asyncio.to_thread(receiver.wait_for, 1)
    finally:
        await service.stop()

    event = webhooks.verify(got.body, got.headers["Fibric-Signature"], secret)
    assert event["object"] == "event" and event["type"] == "plan.proposed"
    assert event["id"].startswith("evt_") and event["created_at"].endswith("Z")
    assert event["data"] == views.plan(plan)  # the plan as GET /v1/plans/{id} shows it
    # A third-party Standard Webhooks verifier accepts the same delivery, and can dedup by webhook-id.
    assert standardwebhooks.Webhook(secret).verify(got.body, got.headers) == event
    assert got.headers["webhook-id"] == event["id"]
    assert got.headers["Content-Type"] == "application/json"
    item = only_delivery(state, webhook)
    assert (item.status, item.attempts, item.last_status_code) == ("delivered", 1, 200)


async def test_only_subscribed_enabled_endpoints_of_the_tenant_get_the_event(
    state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant, receiver: Receiver,
    clock: Clock,
) -> None:
    subscribed, _ = create_webhook(state, tenant, receiver.url + "/a")
    create_webhook(state, tenant, receiver.url + "/b", name="executed-only", events=("plan.executed",))
    create_webhook(state, tenant, receiver.url + "/c", name="off", enabled=False)
    create_webhook(state, other_tenant, receiver.url + "/d")
    propose(state, tenant)
    async with dispatching(state, clock) as service:
        await service.run_once()
    assert [r.path for r in receiver.received] == ["/hooks/a"]
    assert only_delivery(state, subscribed).status == "delivered"


async def test_no_delivery_for_a_change_that_rolled_back(
    state: store.StateStore, tenant: store.Tenant, receiver: Receiver, clock: Clock
) -> None:
    create_webhook(state, tenant, receiver.url)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), state.backend.transaction(write=True) as cur:
        outbox.enqueue(cur, reseller_id=tenant.reseller_id, tenant_id=tenant.id, type="plan.proposed",
                       payload={"id": "pl_rolled_back"})
        raise Boom("the change failed after its event was written")
    with state.backend.transaction(write=True) as cur:
        committed = outbox.enqueue(cur, reseller_id=tenant.reseller_id, tenant_id=tenant.id,
                                   type="plan.proposed", payload={"id": "pl_committed"})
    async with dispatching(state, clock) as service:
        await service.run_once()
        await service.run_once()
    assert [json.loads(r.body)["data"]["id"] for r in receiver.received] == ["pl_committed"]
    assert json.loads(receiver.received[0].body)["id"] == committed


async def test_500s_are_retried_with_backoff_until_delivered(
    state: store.StateStore, tenant: store.Tenant, receiver: Receiver, clock: Clock
) -> None:
    webhook, _ = create_webhook(state, tenant, receiver.url)
    receiver.answer(500, 503)
    propose(state, tenant)
    async with dispatching(state, clock) as service:
        await service.run_once()
        first = only_delivery(state, webhook)
        assert (first.status, first.attempts, first.last_status_code) == ("pending", 1, 500)
        assert first.next_attempt_at is not None
        wait = (first.next_attempt_at - clock.now).total_seconds()
        assert dispatch.RETRY_BASE_SECONDS * 0.8 <= wait <= dispatch.RETRY_BASE_SECONDS * 1.2

        clock.advance(seconds=wait - 1)  # not yet due: nothing is sent
        await service.run_once()
        assert len(receiver.received) == 1

        clock.advance(seconds=2)
        await service.run_once()
        second = only_delivery(state, webhook)
        assert (second.attempts, second.last_status_code) == (2, 503)
        assert second.next_attempt_at is not None
        assert (second.next_attempt_at - clock.now).total_seconds() >= dispatch.RETRY_BASE_SECONDS * 2 * 0.8

        clock.now = second.next_attempt_at
        await service.run_once()
    done = only_delivery(state, webhook)
    assert (done.status, done.attempts, done.last_status_code) == ("delivered", 3, 200)
    bodies = {r.body for r in receiver.received}
    assert len(bodies) == 1  # every retry carries the same bytes
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    attempts = deliveries.attempts_of(state, tenant.id, [done.id])[done.id]
    assert [(a.number, a.status_code, a.error) for a in attempts] == [(1, 500, None), (2, 503, None),
                                                                      (3, 200, None)]
    assert all(a.duration_ms >= 0 for a in attempts)
    assert webhook_store.read(state, tenant.id, webhook.id).failing_since is None
    reconcile.reconcile_webhook(state, webhook, clock.now)
    conds = state.get_object(tenant.id, "Webhook", webhook.id).status["conditions"]
    assert [(c["type"], c["status"], c["reason"]) for c in conds] == [
        ("Ready", "True", "Enabled"), ("Delivering", "True", "Succeeding")]


async def test_a_timeout_is_a_failed_attempt_and_retried(
    state: store.StateStore, tenant: store.Tenant, receiver: Receiver, clock: Clock
) -> None:
    webhook, _ = create_webhook(state, tenant, receiver.url)
    receiver.answer((200, 1.5))  # answers only after the read timeout
    propose(state, tenant)
    async with dispatching(state, clock, read_timeout_seconds=0.3) as service:
        await service.run_once()
        item = only_delivery(state, webhook)
        assert (item.status, item.last_status_code, item.last_error) == ("pending", None, "timeout")
        clock.advance(hours=1)
        await service.run_once()
    assert only_delivery(state, webhook).status == "delivered"


async def test_a_connection_error_is_retried(
    state: store.StateStore, tenant: store.Tenant, clock: Clock
) -> None:
    import socket

    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    webhook, _ = create_webhook(state, tenant, f"http://127.0.0.1:{port}/hooks")
    propose(state, tenant)
    async with dispatching(state, clock) as service:
        await service.run_once()
    item = only_delivery(state, webhook)
    assert item.status == "pending" and item.last_error is not None and "Connect" in item.last_error


async def test_a_redirect_is_a_failed_attempt_and_not_followed(
    state: store.StateStore, tenant: store.Tenant, receiver: Receiver, clock: Clock
) -> None:
    webhook, _ = create_webhook(state, tenant, receiver.url)
    receiver.answer(302)
    propose(state, tenant)
    async with dispatching(state, clock) as service:
        await service.run_once()
    assert [r.path for r in receiver.received] == ["/hooks"]
    item = only_delivery(state, webhook)
    assert (item.status, item.last_status_code) == ("pending", 302)


async def test_a_huge_answer_is_not_read_whole(
    state: store.StateStore, tenant: store.Tenant, receiver: Receiver, clock: Clock
) -> None:
    webhook, _ = create_webhook(state, tenant, receiver.url)
    receiver.answer((200, 0.0, b"x" * 5_000_000))
    propose(state, tenant)
    async with dispatching(state, clock, max_response_bytes=1024) as service:
        await service.run_once()
    assert only_delivery(state, webhook).status == "delivered"


async def test_a_restart_mid_backoff_loses_nothing(
    state: store.StateStore, store_location: str, tenant: store.Tenant, receiver: Receiver, clock: Clock
) -> None:
    webhook, secret = create_webhook(state, tenant, receiver.url)
    receiver.answer(500)
    first = dispatcher(state, clock)
    await first.start()
    try:
        propose(state, tenant)
        propose(state, tenant)
        await asyncio.to_thread(receiver.wait_for, 2)
    finally:
        await first.stop()
    pending = deliveries.list_deliveries(state, tenant.id, webhook.id, status="pending")
    assert len(pending) == 1  # one failed and waits for its retry; the other was delivered

    reopened = store.open_store(store_location)  # a new process over the same store
    clock.advance(hours=1)
    second = dispatcher(reopened, clock)
    try:
        await second.run_once()
    finally:
        await second.aclose()
        reopened.close()
    assert [d.status for d in deliveries.list_deliveries(state, tenant.id, webhook.id)] == ["delivered"] * 2
    events = [webhooks.verify(r.body, r.headers["Fibric-Signature"], secret or "") for r in receiver.received]
    assert len({e["id"] for e in events}) == 2 and len(events) == 3


async def test_a_dispatcher_that_dies_mid_send_loses_its_claim_to_the_next(
    state: store.StateStore, tenant: store.Tenant, receiver: Receiver, clock: Clock
) -> None:
    webhook, _ = create_webhook(state, tenant, receiver.url)
    propose(state, tenant)
    deliveries.fan_out(state, now=clock.now)
    [claimed] = deliveries.claim_due(state, now=clock.now, lease_seconds=60, limit=10)  # then it "crashes"
    async with dispatching(state, clock) as service:
        assert await service.run_once() == 0  # still leased
        clock.advance(seconds=61)
        await service.run_once()
    assert only_delivery(state, webhook).status == "delivered"
    assert len(receiver.received) == 1
    attempt = deliveries.Attempt(claimed.id, 1, clock.now, 1, 500, None)
    late = deliveries.Outcome(attempt, "pending", clock.now)
    endpoint = webhook_store.read(state, tenant.id, webhook.id)
    deliveries.record(state, claimed, endpoint, late)  # the stale claim writes nothing
    assert only_delivery(state, webhook).status == "delivered"


async def test_two_dispatchers_deliver_each_event_once(
    state: store.StateStore, tenant: store.Tenant, receiver: Receiver, clock: Clock
) -> None:
    create_webhook(state, tenant, receiver.url)
    for _ in range(20):
        propose(state, tenant)
    a, b = dispatcher(state, clock), dispatcher(state, clock)
    try:
        for _ in range(3):
            await asyncio.gather(a.run_once(), b.run_once())
    finally:
        await a.aclose()
        await b.aclose()
    ids = [json.loads(r.body)["id"] for r in receiver.received]
    assert len(ids) == 20 and len(set(ids)) == 20


async def test_rotation_signs_with_both_secrets_during_the_grace_period(
    state: store.StateStore, tenant: store.Tenant, receiver: Receiver, clock: Clock
) -> None:
    webhook, old = create_webhook(state, tenant, receiver.url)
    assert old is not None
    new = webhooks.new_secret()
    webhook_store.rotate(state, box(), tenant.id, webhook.id, new, grace_seconds=3600, now=clock.now)
    propose(state, tenant)
    async with dispatching(state, clock) as service:
        await service.run_once()
        clock.advance(seconds=3601)  # the grace period is over: only the new secret signs
        propose(state, tenant)
        await service.run_once()
    during, after = receiver.received
    assert during.headers["Fibric-Signature"].count("v1=") == 2
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        webhooks.verify(during.body, during.headers["Fibric-Signature"], secret)
        standardwebhooks.Webhook(secret).verify(during.body, during.headers)
    assert after.headers["Fibric-Signature"].count("v1=") == 1
    webhooks.verify(after.body, after.headers["Fibric-Signature"], new)
    with pytest.raises(webhooks.SignatureVerificationError):
        webhooks.verify(after.body, after.headers["Fibric-Signature"], old)


async def test_410_gone_disables_the_endpoint(
    state: store.StateStore, tenant: store.Tenant, receiver: Receiver, clock: Clock
) -> None:
    webhook, _ = create_webhook(state, tenant, receiver.url)
    receiver.answer(410)
    propose(state, tenant)
    async with dispatching(state, clock) as service:
        await service.run_once()
        propose(state, tenant)  # not delivered: the endpoint is disabled
        clock.advance(hours=2)
        await service.run_once()
    assert len(receiver.received) == 1
    item = only_delivery(state, webhook)
    assert (item.status, item.last_status_code) == ("failed", 410)
    endpoint = webhook_store.read(state, tenant.id, webhook.id)
    assert not endpoint.enabled and endpoint.disabled_reason == "the endpoint answered 410 Gone"
    reconcile.reconcile_webhook(state, webhook, clock.now)
    [ready] = [c for c in state.get_object(tenant.id, "Webhook", webhook.id).status["conditions"]
               if c["type"] == "Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "DisabledByDispatcher")
    assert "410" in ready["message"]


async def test_failing_for_24_hours_gives_up_and_disables_the_endpoint(
    state: store.StateStore, tenant: store.Tenant, receiver: Receiver, clock: Clock
) -> None:
    webhook, _ = create_webhook(state, tenant, receiver.url)
    receiver.answer(*([500] * 40))
    propose(state, tenant)
    created = clock.now
    async with dispatching(state, clock) as service:
        await service.run_once()
        reconcile.reconcile_webhook(state, webhook, clock.now)
        conds = state.get_object(tenant.id, "Webhook", webhook.id).status["conditions"]
        assert [(c["type"], c["status"], c["reason"]) for c in conds] == [
            ("Ready", "True", "Enabled"), ("Delivering", "False", "Failing")]
        while only_delivery(state, webhook).status == "pending":
            item = only_delivery(state, webhook)
            assert item.next_attempt_at is not None
            clock.now = item.next_attempt_at
            await service.run_once()
    item = only_delivery(state, webhook)
    assert item.status == "failed"
    assert clock.now - created == timedelta(seconds=dispatch.MAX_AGE_SECONDS)  # the last attempt at 24 h
    assert 10 <= item.attempts == len(receiver.received) <= 20
    endpoint = webhook_store.read(state, tenant.id, webhook.id)
    assert endpoint.disabled_reason is not None and "failing continuously" in endpoint.disabled_reason


async def test_a_secret_env_webhook_signs_with_the_variable(
    state: store.StateStore, tenant: store.Tenant, receiver: Receiver, clock: Clock
) -> None:
    webhook, generated = create_webhook(state, tenant, receiver.url, secret_env="OPS_HOOK_SECRET")
    assert generated is None
    propose(state, tenant)
    async with dispatching(state, clock) as service:
        await service.run_once()  # the variable is not set: nothing can be signed, nothing is sent
        assert receiver.received == []
        assert "OPS_HOOK_SECRET" in (only_delivery(state, webhook).last_error or "")
        service.environ = {"OPS_HOOK_SECRET": "from-the-environment"}
        clock.advance(hours=1)
        await service.run_once()
    [got] = receiver.received
    webhooks.verify(got.body, got.headers["Fibric-Signature"], "from-the-environment")


async def test_a_deleted_webhook_gets_nothing_more(
    state: store.StateStore, tenant: store.Tenant, receiver: Receiver, clock: Clock
) -> None:
    from fibric.controller import applier

    webhook, _ = create_webhook(state, tenant, receiver.url)
    propose(state, tenant)
    deliveries.fan_out(state, now=clock.now)
    applier.delete(state, tenant.id, "Webhook", webhook.id)
    async with dispatching(state, clock) as service:
        await service.run_once()
    assert receiver.received == []
    item = only_delivery(state, webhook)
    assert (item.status, item.last_error) == ("failed", "webhook deleted")


def test_secrets_are_sealed_at_rest_and_need_the_key(
    state: store.StateStore, tenant: store.Tenant, receiver: Receiver
) -> None:
    from fibric.store import secretbox

    webhook, secret = create_webhook(state, tenant, receiver.url)
    assert secret is not None and webhook.secret is not None
    assert secret not in webhook.secret and webhook.secret.startswith(secretbox.SEALED_PREFIX)
    assert box().open(webhook.secret, tenant.id) == secret
    with pytest.raises(errors.PermanentError, match="cannot be decrypted"):
        secretbox.SecretBox(key=secretbox.new_key()).open(webhook.secret, tenant.id)
    with pytest.raises(errors.PermanentError):  # bound to its tenant
        box().open(webhook.secret, "t_other")


async def test_on_postgresql_a_commit_wakes_the_dispatcher_without_waiting_for_its_poll(
    state: store.StateStore, tenant: store.Tenant, receiver: Receiver
) -> None:
    if state.dialect != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite polls")
    create_webhook(state, tenant, receiver.url)
    service = dispatcher(state, poll_seconds=60.0)
    service.clock = dispatch.timefmt.now
    await service.start()
    try:
        await asyncio.sleep(0.5)  # the first pass is done and the listener is connected
        propose(state, tenant)
        received = await asyncio.to_thread(receiver.wait_for, 1, 10.0)
    finally:
        await service.stop()
    assert len(received) == 1  # long before the 60 s poll


async def test_finished_deliveries_are_forgotten_after_the_retention_period(
    state: store.StateStore, tenant: store.Tenant, receiver: Receiver, clock: Clock
) -> None:
    webhook, _ = create_webhook(state, tenant, receiver.url)
    receiver.answer(500)
    propose(state, tenant)
    propose(state, tenant)
    async with dispatching(state, clock) as service:
        await service.run_once()  # one delivered, one waiting for its retry
        clock.advance(days=31, seconds=dispatch.PRUNE_EVERY.total_seconds())
        await service.run_once()  # prunes the delivered one first, then sends the due retry (late, not lost)
        assert [d.status for d in deliveries.list_deliveries(state, tenant.id, webhook.id)] == ["delivered"]
        clock.advance(days=31)
        await service.run_once()
    assert deliveries.list_deliveries(state, tenant.id, webhook.id) == []
    with state.backend.transaction(write=False) as cur:
        cur.execute("SELECT COUNT(*) FROM outbox")
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT COUNT(*) FROM webhook_attempts")
        assert cur.fetchone()[0] == 0


def test_the_retry_schedule_is_the_documented_one() -> None:
    class Middle:
        def uniform(self, low: float, high: float) -> float:
            return (low + high) / 2

    delays = [dispatch.retry_delay(n, Middle()) for n in range(1, 14)]  # type: ignore[arg-type]
    assert delays[:9] == [30 * 2 ** i for i in range(9)]  # 30 s, 1 min, 2 min ... 2 h 8 min
    assert delays[9:] == [4 * 3600] * 4  # then every 4 h, until the last attempt at 24 h
    jittered = {round(dispatch.retry_delay(3, random.Random(seed))) for seed in range(50)}
    assert min(jittered) >= 96 and max(jittered) <= 144 and len(jittered) > 10
