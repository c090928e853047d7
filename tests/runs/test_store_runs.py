"""The store side of routing and runs, on each backend: queueing, coalescing, leases, recovery.

These drive fibric.store.routing_store / runs / schedules directly, so each
interleaving the router can meet (a run in progress while events pile up, a
process dying mid-run, two claimants at once) is set up exactly.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from runs_support import apply_yaml

from fibric import errors, store
from fibric.store import event_store, routing_store, run_store, schedules

OPERATOR = """
apiVersion: fibric.io/v1
kind: Policy
metadata: {{name: guard}}
spec:
  rego: |
    package fibric.guard
    default decision := {{"decision": "BLOCK", "rule": "default"}}
---
apiVersion: fibric.io/v1
kind: Operator
metadata: {{name: {name}}}
spec:
  capabilities: [orders.hold]
  policy: guard
  subscribes: [{subscribes}]
  lifecycle: {lifecycle}
"""


def operator(state: store.StateStore, tenant: store.Tenant, name: str = "ship-risk",
             subscribes: str = "order.updated", lifecycle: str = "active") -> store.StoredObject:
    apply_yaml(state, tenant.id, OPERATOR.format(name=name, subscribes=subscribes, lifecycle=lifecycle))
    return state.get_object(tenant.id, "Operator", name)


def ingest(state: store.StateStore, tenant: store.Tenant, key: str, entity: str = "order:1",
           type: str = "order.updated") -> event_store.Event:
    return event_store.ingest(state, reseller_id=tenant.reseller_id, tenant_id=tenant.id, type=type,
                              entity_key=entity, idempotency_key=key, data={}).event


def start(state: store.StateStore, op: store.StoredObject, entity: str = "order:1", **kw: object
          ) -> run_store.Run | None:
    return run_store.start(state, reseller_id=op.reseller_id, tenant_id=op.tenant_id, operator_id=op.id,
                           operator=op.name, entity_key=entity, trigger="event", **kw)  # type: ignore[arg-type]


def queued(state: store.StateStore) -> list[tuple[str, str, str | None]]:
    with state.backend.transaction(write=False) as cur:
        cur.execute("SELECT operator_id, event_id, run_id FROM run_queue ORDER BY seq")
        return [tuple(r) for r in cur.fetchall()]


def test_routing_queues_an_event_for_each_subscribed_active_operator_once(
    state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant
) -> None:
    exact = operator(state, tenant)
    glob = operator(state, tenant, "all-orders", subscribes='"order.*"')
    operator(state, tenant, "paused", subscribes='"*"', lifecycle="paused")
    operator(state, tenant, "drafted", subscribes='"*"', lifecycle="draft")
    theirs = operator(state, other_tenant, "theirs", subscribes='"*"')
    updated = ingest(state, tenant, "a")
    created = ingest(state, tenant, "b", type="order.created")
    nobody = ingest(state, tenant, "c", type="invoice.paid")
    assert routing_store.unrouted(state) == 3
    assert routing_store.route_pending(state) == routing_store.Routed(events=3, queued=3)
    assert routing_store.route_pending(state) == routing_store.Routed(0, 0)  # routed once, never again
    assert sorted(queued(state)) == sorted([(exact.id, updated.id, None), (glob.id, updated.id, None),
                                            (glob.id, created.id, None)])
    assert routing_store.unrouted(state) == 0 and nobody.id not in {q[1] for q in queued(state)}
    assert theirs.id not in {q[0] for q in queued(state)}


def test_events_arriving_during_a_run_coalesce_into_exactly_one_next_run(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    op = operator(state, tenant)
    first = ingest(state, tenant, "a")
    routing_store.route_pending(state)
    run = start(state, op)
    assert run is not None and run.event_ids == [first.id] and run.status == "running"
    later = [ingest(state, tenant, f"later-{n}") for n in range(5)]
    routing_store.route_pending(state)
    assert start(state, op) is None  # single flight: the entity's run is still going
    assert routing_store.pending_keys(state) == []  # nothing to dispatch while the lease is live
    assert start(state, op, entity="order:2") is None  # another entity with no events: no run
    finished = run_store.finish(state, run, run_store.Outcome("succeeded", sensed=1, proposed=0))
    assert (finished.status, finished.sensed) == ("succeeded", 1) and finished.finished_at is not None
    assert routing_store.pending_keys(state) == [routing_store.PendingKey(tenant.id, op.id, "order:1")]
    follow = start(state, op)
    assert follow is not None and follow.event_ids == [e.id for e in later]
    run_store.finish(state, follow, run_store.Outcome("succeeded"))
    assert queued(state) == [] and start(state, op) is None


def test_a_run_takes_at_most_max_events_and_leaves_the_rest_for_the_next(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    op = operator(state, tenant)
    stored = [ingest(state, tenant, f"k{n}") for n in range(7)]
    routing_store.route_pending(state)
    run = start(state, op, max_events=5)
    assert run is not None and run.event_ids == [e.id for e in stored[:5]]
    run_store.finish(state, run, run_store.Outcome("succeeded"))
    rest = start(state, op, max_events=5)
    assert rest is not None and rest.event_ids == [e.id for e in stored[5:]]


def test_a_run_whose_process_died_is_failed_and_its_events_run_again(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    op = operator(state, tenant)
    event = ingest(state, tenant, "a")
    routing_store.route_pending(state)
    dead = start(state, op, lease_seconds=30)
    assert dead is not None
    assert run_store.reap(state) == []  # the lease is live: nothing to reap
    later = datetime.now(UTC) + timedelta(seconds=31)
    assert run_store.reap(state, now=later) == [dead.id]
    pending = routing_store.PendingKey(tenant.id, op.id, "order:1")
    assert routing_store.pending_keys(state, now=later) == [pending]
    interrupted = run_store.get(state, tenant.id, dead.id)
    assert interrupted.status == "failed" and "interrupted" in (interrupted.error or "")
    retry = start(state, op)
    assert retry is not None and retry.event_ids == [event.id]
    # The dead run's late finish cannot overwrite its verdict or drop the retry's events.
    assert run_store.finish(state, dead, run_store.Outcome("succeeded")).status == "failed"
    assert [q[2] for q in queued(state)] == [retry.id]


def test_a_claimant_takes_over_an_expired_lease_directly(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    op = operator(state, tenant)
    ingest(state, tenant, "a")
    routing_store.route_pending(state)
    dead = start(state, op, lease_seconds=0.0)
    assert dead is not None
    retry = start(state, op)
    assert retry is not None and retry.event_ids == dead.event_ids
    assert run_store.get(state, tenant.id, dead.id).status == "failed"


def test_of_concurrent_claimants_exactly_one_starts_the_run(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    op = operator(state, tenant)
    for n in range(20):
        ingest(state, tenant, f"k{n}")
    routing_store.route_pending(state)
    started: list[run_store.Run] = []
    barrier = threading.Barrier(6)

    def claim() -> None:
        barrier.wait()
        run = start(state, op)
        if run is not None:
            started.append(run)

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(started) == 1 and len(started[0].event_ids) == 20


def test_release_hands_the_events_back_and_frees_the_entity(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    op = operator(state, tenant)
    ingest(state, tenant, "a")
    routing_store.route_pending(state)
    run = start(state, op)
    assert run is not None
    run_store.release(state, run, "interrupted: shutting down")
    assert run_store.get(state, tenant.id, run.id).error == "interrupted: shutting down"
    again = start(state, op)
    assert again is not None and again.event_ids == run.event_ids


def test_discard_drops_only_unclaimed_events_of_the_operator(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    op = operator(state, tenant)
    ingest(state, tenant, "a")
    routing_store.route_pending(state)
    run = start(state, op)
    ingest(state, tenant, "b")
    routing_store.route_pending(state)
    assert routing_store.discard(state, tenant.id, op.id) == 1
    assert run is not None and [q[2] for q in queued(state)] == [run.id]


def test_applied_counts_add_up_and_latest_is_per_operator(
    state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant
) -> None:
    op = operator(state, tenant)
    ingest(state, tenant, "a")
    routing_store.route_pending(state)
    run = start(state, op)
    assert run is not None
    run_store.finish(state, run, run_store.Outcome("succeeded", sensed=1, proposed=2))
    assert run_store.add_applied(state, tenant.id, run.id, 1)
    assert run_store.add_applied(state, tenant.id, run.id, 1)
    assert run_store.get(state, tenant.id, run.id).applied == 2
    assert not run_store.add_applied(state, other_tenant.id, run.id, 1)  # another tenant's run is not there
    with pytest.raises(errors.NotFound):
        run_store.get(state, other_tenant.id, run.id)
    with pytest.raises(errors.PermanentError):
        run_store.add_applied(state, tenant.id, run.id, -1)
    latest = run_store.latest(state, tenant.id, [op.id, "op_never"])
    assert latest == {op.id: run_store.get(state, tenant.id, run.id)}


def test_latest_is_each_operators_newest_run_in_one_read(
    state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant
) -> None:
    first, second = operator(state, tenant), operator(state, tenant, name="stock-watch")
    finished = []
    for n, (op, entity) in enumerate([(first, "order:1"), (second, "order:2"), (first, "order:3")]):
        ingest(state, tenant, f"e{n}", entity=entity)
        routing_store.route_pending(state)
        run = start(state, op, entity=entity)
        assert run is not None
        run_store.finish(state, run, run_store.Outcome("succeeded", sensed=n))
        finished.append(run)

    latest = run_store.latest(state, tenant.id, [first.id, second.id, first.id, "op_never"])

    assert {op_id: run.id for op_id, run in latest.items()} == {first.id: finished[2].id,
                                                                 second.id: finished[1].id}
    assert run_store.latest(state, other_tenant.id, [first.id, second.id]) == {}
    assert run_store.latest(state, tenant.id, []) == {}


def test_a_schedule_advances_by_compare_and_set(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    op = operator(state, tenant)
    at = datetime(2026, 6, 14, 9, 0, tzinfo=UTC)
    assert schedules.advance(state, tenant.id, op.id, None, at)
    assert not schedules.advance(state, tenant.id, op.id, None, at)  # recorded already
    assert schedules.advance(state, tenant.id, op.id, at, at + timedelta(minutes=15))
    assert not schedules.advance(state, tenant.id, op.id, at, at + timedelta(minutes=15))  # lost the race
    assert schedules.last_fired(state) == {(tenant.id, op.id): at + timedelta(minutes=15)}
    schedules.forget(state, tenant.id, op.id)
    assert schedules.last_fired(state) == {}
