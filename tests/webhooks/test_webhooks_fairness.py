"""A tenant's slow receivers hold its own slots, never the queue or another tenant's deliveries."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from webhook_support import Clock, Receiver, box, create_webhook, dev_settings, dispatcher

from fibric import store, timefmt
from fibric.controller import dispatch
from fibric.store import deliveries, plan_store

pytestmark = pytest.mark.anyio


@pytest.fixture
def silent_receiver() -> Iterator[str]:
    """A TCP server that accepts connections and never answers (the hung receiver of the issue)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/hooks"
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    server.close()


def propose(state: store.StateStore, tenant: store.Tenant, n: int = 1) -> None:
    for _ in range(n):
        plan_store.propose(state, tenant.id, operator_id="op_1", actions=[], policy_id=None)


def test_claims_take_tenants_in_turn_and_respect_each_tenants_share(
    state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant, receiver: Receiver,
) -> None:
    create_webhook(state, tenant, receiver.url + "/a")
    create_webhook(state, other_tenant, receiver.url + "/b")
    propose(state, tenant, 20)  # tenant's backlog is older than other_tenant's single delivery
    propose(state, other_tenant, 1)
    now = timefmt.now() + timedelta(seconds=1)
    deliveries.fan_out(state, now=now, limit=100)

    first = deliveries.claim_due(state, now=now, lease_seconds=60, limit=3, per_tenant=10)
    assert [d.tenant_id for d in first].count(other_tenant.id) == 1  # not behind the backlog
    busy = {tenant.id: 2}  # two of its own already in flight: at most one more
    more = deliveries.claim_due(state, now=now, lease_seconds=60, limit=10, per_tenant=3, busy=busy)
    assert [d.tenant_id for d in more] == [tenant.id]
    assert {d.id for d in first}.isdisjoint(d.id for d in more)  # claimed work is not claimed twice


def test_a_dispatcher_racing_another_takes_the_next_deliveries_not_none(
    state: store.StateStore, tenant: store.Tenant, receiver: Receiver,
) -> None:
    if state.dialect != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite serializes writers")
    create_webhook(state, tenant, receiver.url)
    propose(state, tenant, 12)
    now = timefmt.now() + timedelta(seconds=1)
    deliveries.fan_out(state, now=now, limit=100)
    locked, release = threading.Event(), threading.Event()
    held: list[str] = []

    def other_replica_mid_claim() -> None:  # holds the first four in turn, uncommitted
        with state.backend.transaction(write=True) as cur:
            cur.execute("SELECT id FROM webhook_deliveries ORDER BY next_attempt_at, seq LIMIT 4 FOR UPDATE")
            held.extend(row[0] for row in cur.fetchall())
            locked.set()
            release.wait(10)

    other = threading.Thread(target=other_replica_mid_claim)
    other.start()
    try:
        assert locked.wait(10)
        taken = deliveries.claim_due(state, now=now, lease_seconds=60, limit=4, per_tenant=4)
    finally:
        release.set()
        other.join()
    assert len(taken) == 4 and not {d.id for d in taken} & set(held)


def test_a_fast_replica_does_not_take_over_a_delivery_claimed_a_moment_ago(
    state: store.StateStore, tenant: store.Tenant, receiver: Receiver, monkeypatch: pytest.MonkeyPatch,
) -> None:
    create_webhook(state, tenant, receiver.url)
    propose(state, tenant, 1)
    deliveries.fan_out(state, now=timefmt.now() - timedelta(seconds=1), limit=100)
    assert len(deliveries.claim_due(state, lease_seconds=30, limit=10)) == 1  # on the database's clock
    monkeypatch.setattr(timefmt, "offset", timedelta(minutes=10))  # this replica's clock runs ahead
    assert deliveries.claim_due(state, lease_seconds=30, limit=10) == []  # the claim is live: no 2nd attempt


async def test_a_fast_replicas_retry_is_scheduled_on_the_database_clock(
    state: store.StateStore, tenant: store.Tenant, receiver: Receiver, monkeypatch: pytest.MonkeyPatch,
) -> None:
    create_webhook(state, tenant, receiver.url)
    receiver.answer(500)
    propose(state, tenant, 1)
    monkeypatch.setattr(timefmt, "offset", timedelta(minutes=10))  # this replica's clock runs ahead
    service = dispatch.Dispatcher(state, dev_settings(), box(), rng=random.Random(7), environ={})
    try:
        await service.run_once()  # fans out (stamped by its own clock), claims, attempts: a 500
    finally:
        await service.aclose()
    [item] = deliveries.list_deliveries(state, tenant.id, state.get_object(tenant.id, "Webhook",
                                                                          "ops-channel").id)
    assert item.status == "pending" and item.next_attempt_at is not None
    wait = (item.next_attempt_at - datetime.now(UTC)).total_seconds()
    assert 0 < wait <= dispatch.RETRY_BASE_SECONDS * (1 + dispatch.JITTER)  # not ten minutes late


async def test_a_tenant_whose_receiver_hangs_does_not_delay_another_tenants_delivery(
    state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant, receiver: Receiver,
    silent_receiver: str, clock: Clock,
) -> None:
    create_webhook(state, tenant, silent_receiver, name="hung")
    create_webhook(state, other_tenant, receiver.url, name="fine")
    propose(state, tenant, 30)  # a backlog far beyond the tenant's share of attempts in flight
    service = dispatcher(state, clock=None, concurrency=8, read_timeout_seconds=30.0)
    service.clock = timefmt.now
    service.tenant_deliveries = 2
    await service.start()
    try:
        await asyncio.sleep(0.5)  # the hung tenant's attempts are in flight, waiting on its receiver
        started = time.monotonic()
        propose(state, other_tenant)
        service.wake()
        [got] = await asyncio.to_thread(receiver.wait_for, 1, 5.0)
        took = time.monotonic() - started
        hung = [d for d in deliveries.list_deliveries(state, tenant.id, state.get_object(
            tenant.id, "Webhook", "hung").id) if d.claim is not None]
    finally:
        await service.stop(grace=0.1)
    assert got.path == "/hooks" and took < 3.0
    assert len(hung) <= 2  # the hung tenant held its share of attempts, no more
