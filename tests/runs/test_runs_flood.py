"""A flood of events for one entity: one run at a time, coalesced, and never a duplicate plan.

657 events about one order arrive through POST /v1/events from concurrent
clients over real HTTP. Whatever the interleaving, every event is consumed
by exactly one run, no two runs of the operator for that order overlap,
the runs are far fewer than the events (each takes everything that piled up
while the previous one ran), and the identical proposals they all make end
as one plan.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from live_server import serving
from runs_support import AT_RISK, Live, all_runs, apply_examples, assert_single_flight, settle

from fibric import policies, store
from fibric.controller import decide, event_routing, operator_runs, reconcile
from fibric.store import event_store, plan_store, routing_store

FLOOD = 657
CLIENTS = 8


def test_a_flood_for_one_entity_runs_one_at_a_time_and_makes_one_plan(
    harness: Live, state: store.StateStore, tenant: store.Tenant
) -> None:
    apply_examples(state, tenant.id)
    _, secret = state.create_api_key(tenant.id, frozenset({"events:write"}))

    def send(base: str, keys: list[int]) -> list[int]:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {secret}"}, timeout=30) as c:
            return [c.post("/v1/events", json={
                "type": "order.updated", "entity_key": "order:SO-10884", "idempotency_key": f"flood-{n}",
                "data": AT_RISK}).status_code for n in keys]

    with serving(harness.app) as base, ThreadPoolExecutor(CLIENTS) as pool:
        parts = pool.map(lambda i: send(base, list(range(i, FLOOD, CLIENTS))), range(CLIENTS))
        statuses = [s for part in parts for s in part]
        settle(state)
    assert statuses == [202] * FLOOD
    done = all_runs(state, tenant.id)
    consumed = [e for run in done for e in run.event_ids]
    stored = {e.id for e in event_store.list_events(state, tenant.id)}
    assert len(consumed) == FLOOD and set(consumed) == stored  # each event in exactly one run
    assert all(run.status == "succeeded" for run in done)
    assert_single_flight(done)
    assert len(done) <= FLOOD // 4, f"{len(done)} runs for {FLOOD} events: not coalesced"
    [plan] = plan_store.list_plans(state, tenant.id)
    assert len(plan.actions) == 2
    assert {run.plan_id for run in done if run.proposed} == {plan.id}


@pytest.mark.anyio
async def test_two_replicas_routing_one_store_keep_single_flight(
    state: store.StateStore, tenant: store.Tenant, engine: policies.Engine
) -> None:
    """Two routers (as two replicas would run) over one store: disjoint claims, still one run at a time."""
    apply_examples(state, tenant.id)
    replicas = [
        event_routing.Router(
            state, operator_runs.Runner(state, decide.Decider(state, engine, reconcile.CompileCache())),
            poll_seconds=0.05)
        for _ in range(2)
    ]
    for replica in replicas:
        await replica.start()

    def ingest(n: int) -> None:
        event_store.ingest(state, reseller_id=tenant.reseller_id, tenant_id=tenant.id, type="order.updated",
                           entity_key=f"order:SO-{n % 3}", idempotency_key=f"k-{n}", data=AT_RISK)

    try:
        await asyncio.gather(*(asyncio.to_thread(ingest, n) for n in range(300)))
        await asyncio.to_thread(settle, state)
    finally:
        for replica in replicas:
            await replica.stop()
    done = all_runs(state, tenant.id)
    consumed = [e for run in done for e in run.event_ids]
    assert len(consumed) == 300 and len(set(consumed)) == 300
    assert_single_flight(done)
    assert len(plan_store.list_plans(state, tenant.id)) == 3  # one per order, however the work was split


def test_a_flooding_tenant_does_not_push_another_tenants_run_to_the_back(
    state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant
) -> None:
    """Work is taken tenants' oldest first, in turn: one event of B beats A's backlog of 50 entities."""
    for owner in (tenant, other_tenant):
        apply_examples(state, owner.id)
    for n in range(50):
        event_store.ingest(state, reseller_id=tenant.reseller_id, tenant_id=tenant.id, type="order.updated",
                           entity_key=f"order:A-{n}", idempotency_key=f"a-{n}", data=AT_RISK)
    event_store.ingest(state, reseller_id=other_tenant.reseller_id, tenant_id=other_tenant.id,
                       type="order.updated", entity_key="order:B-1", idempotency_key="b-1", data=AT_RISK)
    routing_store.route_pending(state, limit=1000)
    first = routing_store.pending_keys(state, limit=2)
    assert {k.tenant_id for k in first} == {tenant.id, other_tenant.id}
    assert [k.entity_key for k in first if k.tenant_id == tenant.id] == ["order:A-0"]  # A's oldest


@pytest.mark.anyio
async def test_a_tenant_runs_at_most_its_share_at_once(
    state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant, engine: policies.Engine
) -> None:
    for owner in (tenant, other_tenant):
        apply_examples(state, owner.id)
    for n in range(12):
        event_store.ingest(state, reseller_id=tenant.reseller_id, tenant_id=tenant.id, type="order.updated",
                           entity_key=f"order:A-{n}", idempotency_key=f"a-{n}", data=AT_RISK)
    event_store.ingest(state, reseller_id=other_tenant.reseller_id, tenant_id=other_tenant.id,
                       type="order.updated", entity_key="order:B-1", idempotency_key="b-1", data=AT_RISK)
    runner = operator_runs.Runner(state, decide.Decider(state, engine, reconcile.CompileCache()))
    started: list[str] = []
    real = runner.run_events

    async def slow_run(key: routing_store.PendingKey) -> None:
        started.append(key.tenant_id)
        await asyncio.sleep(0.3)  # long enough for the router to fill every slot it may
        await real(key)

    runner.run_events = slow_run  # type: ignore[method-assign]
    router = event_routing.Router(state, runner, poll_seconds=0.05, concurrency=4, tenant_runs=2)
    await router.start()
    try:
        await asyncio.sleep(0.15)
        first_wave = list(started)
    finally:
        await router.stop()
    assert first_wave.count(tenant.id) == 2 and first_wave.count(other_tenant.id) == 1
