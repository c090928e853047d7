"""Leases, executions and intents in the state store, on SQLite and PostgreSQL.

Single-flight is only as good as the lease: two holders never hold one
entity, an expired lease is taken over, and on PostgreSQL this holds across
two StateStore instances (two replicas) racing for the same entity.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from fibric import errors, store
from fibric.store import intents, leases, outbox, plan_store


def test_a_lease_has_one_holder_until_it_expires(state: store.StateStore, tenant: store.Tenant) -> None:
    assert leases.acquire(state, tenant.id, "order:SO-1", "exe_a", ttl=30)
    assert not leases.acquire(state, tenant.id, "order:SO-1", "exe_b", ttl=30)
    assert leases.acquire(state, tenant.id, "order:SO-2", "exe_b", ttl=30)  # another entity is free
    assert leases.holder_of(state, tenant.id, "order:SO-1") == "exe_a"

    later = datetime.now(UTC) + timedelta(seconds=31)  # exe_a died and stopped renewing
    assert leases.acquire(state, tenant.id, "order:SO-1", "exe_b", ttl=30, now=later)
    leases.release(state, tenant.id, ["order:SO-1"], "exe_a")  # too late: no longer exe_a's
    assert not leases.acquire(state, tenant.id, "order:SO-1", "exe_c", ttl=30)


def test_release_and_renew_touch_only_the_holders_own_leases(
    state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant
) -> None:
    assert leases.acquire(state, tenant.id, "order:SO-1", "exe_a", ttl=30)
    assert leases.acquire(state, other_tenant.id, "order:SO-1", "exe_b", ttl=30)  # tenants never collide
    assert leases.renew(state, tenant.id, ["order:SO-1", "order:SO-9"], "exe_a", ttl=30) == ["order:SO-9"]
    leases.release(state, tenant.id, ["order:SO-1"], "exe_b")
    assert leases.holder_of(state, tenant.id, "order:SO-1") == "exe_a"
    leases.release(state, tenant.id, ["order:SO-1"], "exe_a")
    assert leases.holder_of(state, tenant.id, "order:SO-1") is None
    assert leases.acquire(state, tenant.id, "order:SO-1", "exe_c", ttl=30)


def test_racing_holders_in_threads_get_one_lease(state: store.StateStore, tenant: store.Tenant) -> None:
    won: list[str] = []
    barrier = threading.Barrier(8)

    def race(n: int) -> None:
        barrier.wait()
        if leases.acquire(state, tenant.id, "order:SO-1", f"exe_{n}", ttl=30):
            won.append(f"exe_{n}")

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1


def test_two_replicas_on_postgresql_get_one_lease(store_location: str) -> None:
    if not store_location.startswith("postgresql"):
        pytest.skip("cross-process leases are a PostgreSQL property (SQLite is one host)")
    first, second = store.open_store(store_location), store.open_store(store_location)
    try:
        tenant = first.create_tenant("acme", "rs_fibric")
        results: dict[str, bool] = {}
        barrier = threading.Barrier(2)

        def race(name: str, replica: store.StateStore) -> None:
            barrier.wait()
            taken = leases.acquire(replica, tenant.id, "order:SO-1", f"exe_{name}", ttl=30)
            results[name] = taken is not None

        threads = [threading.Thread(target=race, args=(n, s)) for n, s in (("a", first), ("b", second))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results.values()) == [False, True]
        winner = next(n for n, ok in results.items() if ok)
        assert leases.holder_of(second, tenant.id, "order:SO-1") == f"exe_{winner}"
        leases.release(first if winner == "a" else second, tenant.id, ["order:SO-1"], f"exe_{winner}")
        assert leases.acquire(second, tenant.id, "order:SO-1", "exe_c", ttl=30)
    finally:
        first.close()
        second.close()


def _plan(state: store.StateStore, tenant: store.Tenant) -> plan_store.Plan:
    return plan_store.propose(state, tenant.id, operator_id="op_1", policy_id="pol_1", actions=[
        {"capability": "orders.hold", "entity_key": "order:SO-1", "idempotency_key": "k1", "args": {},
         "decision": "ALLOW"}])


def test_an_execution_is_claimed_only_after_its_holder_stops_renewing(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    plan = _plan(state, tenant)
    intents.begin_execution(state, tenant.id, plan.id, only_actions=["k1"], holder="exe_a", ttl=0.2)
    with pytest.raises(errors.Conflict):
        intents.begin_execution(state, tenant.id, plan.id, only_actions=None, holder="exe_b", ttl=30)
    assert intents.claim_execution(state, tenant.id, plan.id, "exe_b", ttl=30) is None  # still live
    assert intents.stale_executions(state) == []
    time.sleep(0.3)
    assert [e.plan_id for e in intents.stale_executions(state)] == [plan.id]
    claimed = intents.claim_execution(state, tenant.id, plan.id, "exe_b", ttl=30)
    assert claimed is not None and claimed.holder == "exe_b" and claimed.only_actions == ["k1"]
    assert not intents.renew_execution(state, tenant.id, plan.id, "exe_a", ttl=30)  # the dead one lost it

    before = len(outbox.pending(state))
    assert intents.finish_execution(state, tenant.id, plan.id, reseller_id=tenant.reseller_id,
                                    events=[("plan.executed", {"id": plan.id})])
    assert not intents.finish_execution(state, tenant.id, plan.id, reseller_id=tenant.reseller_id,
                                        events=[("plan.executed", {"id": plan.id})])
    assert [e.type for e in outbox.pending(state)[before:]] == ["plan.executed"]  # announced once


def test_an_intent_completes_once_with_its_events(state: store.StateStore, tenant: store.Tenant) -> None:
    plan = _plan(state, tenant)
    intent = intents.record(state, reseller_id=tenant.reseller_id, tenant_id=tenant.id, plan_id=plan.id,
                            idempotency_key="k1", calls_tool=True, receipt={"capability": "orders.hold"},
                            tool={"name": "orders.hold", "idempotent": True})
    with pytest.raises(errors.Conflict):  # one intent per action of a plan
        intents.record(state, reseller_id=tenant.reseller_id, tenant_id=tenant.id, plan_id=plan.id,
                       idempotency_key="k1", calls_tool=True, receipt={}, tool={})
    assert intents.pending_elsewhere(state, tenant.id, "k1", "pl_other") == intent
    assert intents.pending_elsewhere(state, tenant.id, "k1", plan.id) is None

    before = len(outbox.pending(state))
    events = [("receipt.created", {"id": "rc_1"}), ("action.disposed", {"receipt_id": "rc_1"})]
    assert intents.complete(state, intent, "rc_1", events=events)
    assert not intents.complete(state, intent, "rc_1", events=events)
    assert [e.type for e in outbox.pending(state)[before:]] == ["receipt.created", "action.disposed"]
    done = intents.for_plan(state, tenant.id, plan.id)["k1"]
    assert (done.state, done.receipt_id, done.tool["idempotent"]) == ("completed", "rc_1", True)
    assert intents.pending_elsewhere(state, tenant.id, "k1", "pl_other") is None


def test_abandoning_an_execution_puts_the_plan_back_to_proposed(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    plan = _plan(state, tenant)
    plan_store.approve(state, tenant.id, plan.id, approver="ops")
    intents.begin_execution(state, tenant.id, plan.id, only_actions=None, holder="exe_a", ttl=30)
    assert not intents.abandon_execution(state, tenant.id, plan.id, "exe_b")
    assert intents.abandon_execution(state, tenant.id, plan.id, "exe_a")
    again = plan_store.get(state, tenant.id, plan.id)
    assert (again.status, again.approver) == ("proposed", None)
    assert intents.get_execution(state, tenant.id, plan.id) is None


def test_an_approval_that_never_started_is_found(state: store.StateStore, tenant: store.Tenant) -> None:
    plan = _plan(state, tenant)
    plan_store.approve(state, tenant.id, plan.id, approver="ops")
    assert intents.unstarted_approvals(state, older_than=3600) == []
    assert intents.unstarted_approvals(state, older_than=0) == [(tenant.id, plan.id)]
    intents.begin_execution(state, tenant.id, plan.id, only_actions=None, holder="exe_a", ttl=30)
    assert intents.unstarted_approvals(state, older_than=0) == []


def test_an_execution_ends_in_one_commit_and_a_racing_holder_ends_it_once(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    plan = plan_store.approve(state, tenant.id, _plan(state, tenant).id, approver="alice")
    intents.begin_execution(state, tenant.id, plan.id, only_actions=None, holder="exe_a", ttl=30)
    assert leases.acquire(state, tenant.id, "order:SO-1", "exe_a", ttl=30)
    before = len(outbox.pending(state))
    results = [{"idempotency_key": "k1", "outcome": "applied"}]

    def announce(final: plan_store.Plan) -> list[tuple[str, dict[str, object]]]:
        return [("plan.executed", {"id": final.id, "status": final.status})]

    final = intents.conclude(state, plan, results=results, entities=["order:SO-1"], holder="exe_a",
                             events_of=announce)
    assert final.status == "executed" and final.results == results
    assert leases.holder_of(state, tenant.id, "order:SO-1") is None
    assert intents.stale_executions(state) == [] and not intents.renew_execution(
        state, tenant.id, plan.id, "exe_a", ttl=30)  # finished: nothing left to renew

    # Recovery finishing the same plan a moment later keeps the first results and announces nothing.
    again = intents.conclude(state, plan, results=[{"idempotency_key": "k1", "outcome": "in_doubt"}],
                             entities=["order:SO-1"], holder="exe_b", events_of=announce)
    assert again.results == results
    assert [(e.type, e.payload) for e in outbox.pending(state)[before:]] == [
        ("plan.executed", {"id": plan.id, "status": "executed"})]


def test_an_execution_whose_every_action_was_refused_ends_blocked(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    plan = plan_store.approve(state, tenant.id, _plan(state, tenant).id, approver="alice")
    intents.begin_execution(state, tenant.id, plan.id, only_actions=None, holder="exe_a", ttl=30)
    final = intents.conclude(state, plan, results=[{"idempotency_key": "k1", "outcome": "refused"}],
                             entities=[], holder="exe_a", events_of=lambda _: [])
    assert final.status == "blocked"
