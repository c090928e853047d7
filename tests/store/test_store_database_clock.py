"""A replica whose clock runs ahead takes over nothing that is still live: claims read the database's clock.

The replica's skew is the test-only clock offset (`timefmt.offset`,
FIBRIC_TEST_CLOCK_OFFSET_SECONDS), ten minutes ahead: past every lease and
claim below. On PostgreSQL the database's clock is `now()` on its host; a
SQLite store shares this host's clock, which no offset changes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest

from fibric import store, timefmt
from fibric.store import idempotency_store, intents, leases, plan_store, run_store

SKEW = timedelta(minutes=10)
TTL = 30.0


def test_a_live_entity_lease_is_not_taken_over_by_a_fast_replica(
    state: store.StateStore, tenant: store.Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert leases.acquire(state, tenant.id, "order:1", "exe_a", TTL)
    monkeypatch.setattr(timefmt, "offset", SKEW)
    assert not leases.acquire(state, tenant.id, "order:1", "exe_fast", TTL)
    assert leases.holder_of(state, tenant.id, "order:1") == "exe_a"
    assert leases.renew(state, tenant.id, ["order:1"], "exe_a", TTL) == []


def test_a_live_execution_is_not_claimed_by_a_fast_replicas_recovery(
    state: store.StateStore, tenant: store.Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = plan_store.propose(state, tenant.id, operator_id="op_1", actions=[], policy_id=None)
    plan_store.approve(state, tenant.id, plan.id, approver="ops")
    intents.begin_execution(state, tenant.id, plan.id, only_actions=None, holder="exe_a", ttl=TTL)
    monkeypatch.setattr(timefmt, "offset", SKEW)
    assert intents.stale_executions(state) == []
    assert intents.claim_execution(state, tenant.id, plan.id, "exe_fast", TTL) is None
    assert intents.renew_execution(state, tenant.id, plan.id, "exe_a", TTL)


def test_a_fresh_approval_is_not_taken_for_an_abandoned_one(
    state: store.StateStore, tenant: store.Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = plan_store.propose(state, tenant.id, operator_id="op_1", actions=[], policy_id=None)
    plan_store.approve(state, tenant.id, plan.id, approver="ops")  # its executor is about to begin
    monkeypatch.setattr(timefmt, "offset", SKEW)
    assert intents.unstarted_approvals(state, older_than=TTL) == []


def test_a_running_operator_run_is_not_reaped_or_doubled_by_a_fast_replica(
    state: store.StateStore, tenant: store.Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    def start() -> run_store.Run | None:
        return run_store.start(state, reseller_id=tenant.reseller_id, tenant_id=tenant.id,
                               operator_id="op_1", operator="ship-risk", entity_key="order:1",
                               trigger="schedule", lease_seconds=TTL)

    first = start()
    assert first is not None
    monkeypatch.setattr(timefmt, "offset", SKEW)
    assert start() is None  # single-flight holds
    assert run_store.reap(state) == []
    assert run_store.get(state, tenant.id, first.id).status == "running"


def test_an_idempotent_request_in_flight_is_not_run_again_by_a_fast_replica(
    state: store.StateStore, tenant: store.Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(idempotency_store.begin(state, tenant.id, "key-1", "f1"), idempotency_store.Started)
    monkeypatch.setattr(timefmt, "offset", SKEW)
    assert isinstance(idempotency_store.begin(state, tenant.id, "key-1", "f1"), idempotency_store.InFlight)


def test_the_offset_setting_skews_only_this_processs_own_clock() -> None:
    code = "from fibric import timefmt; print(round((timefmt.now() - timefmt.datetime.now(timefmt.UTC))" \
           ".total_seconds()))"
    env = {**os.environ, timefmt.CLOCK_OFFSET_ENV: "45"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "45"


def test_a_holder_that_lost_its_execution_cannot_record_an_intent_so_never_calls_the_tool(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    plan = plan_store.propose(state, tenant.id, operator_id="op_1", actions=[], policy_id=None)
    plan_store.approve(state, tenant.id, plan.id, approver="ops")
    first = intents.begin_execution(state, tenant.id, plan.id, only_actions=None, holder="exe_a", ttl=TTL)

    def record(claim: intents.Execution) -> intents.Intent:
        return intents.record(state, reseller_id=tenant.reseller_id, tenant_id=tenant.id, plan_id=plan.id,
                              idempotency_key=f"k-{claim.holder}", calls_tool=True, receipt={}, tool={},
                              fence=claim.token)

    assert record(first).state == "pending"  # its own, live claim
    with state.backend.transaction(write=True) as cur:  # exe_a stalls past its lease (a GC pause)
        cur.execute("UPDATE executions SET expires_at = '2000-01-01T00:00:00.000000+00:00' WHERE plan_id = ?",
                    (plan.id,))
    second = intents.claim_execution(state, tenant.id, plan.id, "exe_b", TTL)
    assert second is not None and second.token > first.token  # a takeover always fences with a larger token

    with pytest.raises(intents.ClaimLost):
        record(first)  # exe_a wakes up and would call the tool: refused before it can
    assert not intents.renew_execution(state, tenant.id, plan.id, "exe_a", TTL)
    assert [i.idempotency_key for i in intents.for_plan(state, tenant.id, plan.id).values()] == ["k-exe_a"]
    assert record(second).state == "pending"
