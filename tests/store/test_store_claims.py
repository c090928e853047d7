"""One claim primitive (fibric/store/claims.py) for every kind of claim, on both backends.

What a holder relies on: a live claim is nobody else's; a takeover after
expiry carries a larger fencing token than anything before it; the holder
that lost a claim can neither renew it, release the new holder's, nor write
under its old token; and (PostgreSQL) a takeover cannot land between a
holder's fence check and the write it guards.
"""

from __future__ import annotations

import threading
import time

import pytest

from fibric import errors, store
from fibric.store import claims, intents, leases, plan_store, run_store

PAST = "2000-01-01T00:00:00.000000+00:00"


def expire(state: store.StateStore, table: str) -> None:
    """What time leaves behind when a holder stops renewing (a killed process)."""
    with state.backend.transaction(write=True) as cur:
        cur.execute(f"UPDATE {table} SET expires_at = ?", (PAST,))


def start_run(state: store.StateStore, tenant: store.Tenant) -> run_store.Run | None:
    """A scheduled run of op_1 on order:1: it takes the RUN claim, or None while another holds it."""
    return run_store.start(state, reseller_id=tenant.reseller_id, tenant_id=tenant.id, operator_id="op_1",
                           operator="op", entity_key="order:1", trigger="schedule")


def test_tokens_increase_across_every_kind_and_every_takeover(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    lease = leases.acquire(state, tenant.id, "order:1", "exe_a", 30)
    plan = plan_store.propose(state, tenant.id, operator_id="op_1", actions=[], policy_id=None)
    plan_store.approve(state, tenant.id, plan.id, approver="ops")
    execution = intents.begin_execution(state, tenant.id, plan.id, only_actions=None, holder="exe_a", ttl=30)
    with state.backend.transaction(write=True) as cur:
        run = claims.take(cur, state.sql, claims.RUN, (tenant.id, "op_1", "order:1"), "run_1", 30)
    assert lease is not None and run is not None
    assert lease.token < execution.token < run.token

    expire(state, "leases")
    taken = leases.acquire(state, tenant.id, "order:1", "exe_b", 30)
    assert taken is not None and taken.token > run.token


def test_a_live_claim_is_nobody_elses_and_its_holder_renews_it_keeping_its_token(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    mine = leases.acquire(state, tenant.id, "order:1", "exe_a", 30)
    assert mine is not None
    assert leases.acquire(state, tenant.id, "order:1", "exe_b", 30) is None
    again = leases.acquire(state, tenant.id, "order:1", "exe_a", 30)  # re-entrant: a renewal
    assert again is not None and again.token == mine.token and again.expires_at >= mine.expires_at


def test_a_holder_that_lost_its_claim_cannot_renew_release_or_write_under_it(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    old = expired_lease(state, tenant)
    new = leases.acquire(state, tenant.id, "order:1", "exe_b", 30)
    assert new is not None and new.token > old.token

    assert leases.renew(state, tenant.id, ["order:1"], "exe_a", 30) == ["order:1"]
    leases.release(state, tenant.id, ["order:1"], "exe_a")  # must not free exe_b's lease
    assert leases.holder_of(state, tenant.id, "order:1") == "exe_b"
    with state.backend.transaction(write=False) as cur:
        key = (tenant.id, "order:1")
        assert not claims.fence(cur, state.sql, claims.ENTITY, key, old.token)
        assert claims.fence(cur, state.sql, claims.ENTITY, key, new.token)


def test_an_expired_claim_fences_nothing_even_before_anyone_takes_it_over(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    mine = expired_lease(state, tenant)
    with state.backend.transaction(write=False) as cur:
        assert not claims.fence(cur, state.sql, claims.ENTITY, (tenant.id, "order:1"), mine.token)


def expired_lease(state: store.StateStore, tenant: store.Tenant) -> claims.Claim:
    """exe_a's lease on order:1, taken and then let lapse (its holder stopped renewing)."""
    taken = leases.acquire(state, tenant.id, "order:1", "exe_a", 30)
    assert taken is not None
    expire(state, "leases")
    return taken


def test_a_finished_execution_is_not_claimable_and_its_expired_claim_is_not_stale(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    plan = plan_store.propose(state, tenant.id, operator_id="op_1", actions=[], policy_id=None)
    plan_store.approve(state, tenant.id, plan.id, approver="ops")
    intents.begin_execution(state, tenant.id, plan.id, only_actions=None, holder="exe_a", ttl=30)
    intents.finish_execution(state, tenant.id, plan.id, reseller_id=tenant.reseller_id, events=[])
    expire(state, "executions")
    assert intents.stale_executions(state) == []
    assert intents.claim_execution(state, tenant.id, plan.id, "exe_b", 30) is None


def test_a_run_whose_process_died_is_interrupted_by_the_next_start_with_a_larger_token(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    first = start_run(state, tenant)
    assert first is not None and start_run(state, tenant) is None  # single-flight
    with state.backend.transaction(write=False) as cur:
        before = claims.current(cur, state.sql, claims.RUN, (tenant.id, "op_1", "order:1"))
    expire(state, "run_leases")
    second = start_run(state, tenant)
    assert second is not None
    with state.backend.transaction(write=False) as cur:
        after = claims.current(cur, state.sql, claims.RUN, (tenant.id, "op_1", "order:1"))
    assert before is not None and after is not None and after.token > before.token
    assert run_store.get(state, tenant.id, first.id).status == "failed"


def test_a_run_whose_lease_was_taken_over_cannot_store_its_plan(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    stalled = start_run(state, tenant)
    assert stalled is not None
    expire(state, "run_leases")
    assert start_run(state, tenant) is not None  # the next run takes over; the stalled one is interrupted

    with pytest.raises(errors.Conflict, match="taken over"):
        plan_store.propose(state, tenant.id, operator_id="op_1", actions=[], policy_id=None,
                           run_id=stalled.id)
    assert plan_store.list_plans(state, tenant.id) == []


def test_a_takeover_waits_for_the_write_a_live_holder_fenced(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    if state.dialect != "postgresql":
        pytest.skip("a row lock across replicas is PostgreSQL's; SQLite serializes every writer")
    plan = plan_store.propose(state, tenant.id, operator_id="op_1", actions=[], policy_id=None)
    plan_store.approve(state, tenant.id, plan.id, approver="ops")
    mine = intents.begin_execution(state, tenant.id, plan.id, only_actions=None, holder="exe_a", ttl=1.0)
    fenced, written = threading.Event(), []

    def holder() -> None:  # checks its claim, then stalls past the lease before its write commits
        with state.backend.transaction(write=True) as cur:
            assert claims.fence(cur, state.sql, claims.EXECUTION, (tenant.id, plan.id), mine.token)
            fenced.set()
            time.sleep(1.5)
            written.append(time.monotonic())

    writer = threading.Thread(target=holder)
    writer.start()
    try:
        assert fenced.wait(5)
        time.sleep(1.2)  # the lease has expired on the database's clock; the holder's write is not in
        taken = intents.claim_execution(state, tenant.id, plan.id, "exe_b", 30)
        took = time.monotonic()
    finally:
        writer.join()
    assert taken is not None and taken.token > mine.token
    assert written and took >= written[0]  # the takeover waited for the fenced write to commit
