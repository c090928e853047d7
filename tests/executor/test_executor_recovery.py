"""Crash recovery in process: the state a dead executor leaves behind, finished by the recovery service.

The subprocess crash matrix (test_crash_matrix.py) kills a real server at
each step; these tests set up each leftover state exactly, so every branch
of recovery is exercised deterministically.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from executor_support import Fibric, effects, example_actions, running

from fibric import store
from fibric.controller import executor
from fibric.store import intents, leases, outbox, plan_store, receipt_store

HOLD, NOTIFY = "ship-risk:SO-10884:hold", "ship-risk:SO-10884:notify"


def crashed_execution(f: Fibric) -> plan_store.Plan:
    """An approved plan whose executor took its lease and recorded its execution, then died."""
    plan = f.propose()
    plan_store.approve(f.state, f.tenant.id, plan.id, approver="ops@acme.com")
    plan = plan_store.get(f.state, f.tenant.id, plan.id)
    intents.begin_execution(f.state, f.tenant.id, plan.id, only_actions=None, holder="exe_dead", ttl=0.3)
    assert leases.acquire(f.state, f.tenant.id, "order:SO-10884", "exe_dead", ttl=0.3)
    return plan


def record_intent(
    f: Fibric, plan: plan_store.Plan, action: dict[str, Any], idempotent: bool
) -> intents.Intent:
    policy = {"decision": action["decision"], "rule": action["capability"], "reasons": [], "flagged": False}
    base = executor.receipt_fields(plan, "ship-risk", action, policy, policy_id=None, policy_sha256=None)
    return intents.record(f.state, reseller_id=plan.reseller_id, tenant_id=plan.tenant_id, plan_id=plan.id,
                          idempotency_key=action["idempotency_key"], calls_tool=True, receipt=base,
                          tool={"connector": "magento", "name": action["capability"],
                                "idempotent": idempotent})


def disposed(f: Fibric, plan: plan_store.Plan, timeout: float = 30.0) -> plan_store.Plan:
    deadline = time.monotonic() + timeout
    while True:
        current = plan_store.get(f.state, f.tenant.id, plan.id)
        execution = intents.get_execution(f.state, f.tenant.id, plan.id)
        # The results are recorded first, then the execution ends (enqueuing plan.executed).
        if current.status in ("executed", "blocked") and execution and execution.finished_at is not None:
            return current
        assert time.monotonic() < deadline, f"recovery never finished plan {plan.id}"
        time.sleep(0.05)


def test_an_idempotent_intent_is_retried_and_the_rest_is_in_doubt(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path
) -> None:
    with running(state, tenant, tmp_path, lease_seconds=0.3) as f:
        before = outbox.last_seq(state)
        plan = crashed_execution(f)
        hold, notify = example_actions()
        record_intent(f, plan, hold, idempotent=True)
        record_intent(f, plan, notify, idempotent=False)

        done = disposed(f, plan)

        results = {r["idempotency_key"]: r for r in done.results or []}
        assert (results[HOLD]["decision"], results[HOLD]["outcome"]) == ("ALLOW", "applied")
        assert (results[NOTIFY]["decision"], results[NOTIFY]["outcome"]) == ("ALERT", "in_doubt")
        assert results[NOTIFY]["flagged"] is True
        assert effects(f.orders_db, HOLD) == 1 and effects(f.orders_db, NOTIFY) == 0
        doubt = f.ledger.get(tenant.id, results[NOTIFY]["receipt_id"])
        assert (doubt.rule, doubt.policy["flagged"], doubt.approver) == ("in-doubt", True, "ops@acme.com")
        events = outbox.history(state, after_seq=before)
        flagged = {e.payload["idempotency_key"]: e.payload["flagged"] for e in events
                   if e.type == "action.disposed"}
        assert flagged == {HOLD: False, NOTIFY: True}
        assert [e.type for e in events].count("plan.executed") == 1
        assert leases.holder_of(state, tenant.id, "order:SO-10884") is None


def test_a_receipt_written_before_the_crash_is_kept_and_announced_once(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path
) -> None:
    with running(state, tenant, tmp_path, lease_seconds=0.3) as f:
        plan = crashed_execution(f)
        hold, _ = example_actions()
        intent = record_intent(f, plan, hold, idempotent=True)
        # A receipt of record whose intent is still pending: what a receipt imported from an earlier
        # release's ledger (committed apart from its intent there) can leave.
        written = f.ledger.append(
            receipt_store.NewReceipt(**intent.receipt, outcome="applied", detail={"ok": 1}))
        before = outbox.last_seq(state)

        done = disposed(f, plan)

        results = {r["idempotency_key"]: r for r in done.results or []}
        assert results[HOLD]["receipt_id"] == written.id
        assert [r.id for r in f.ledger.list_receipts(tenant.id) if r.idempotency_key == HOLD] == [written.id]
        assert effects(f.orders_db, HOLD) == 0  # never called again: the receipt says it was done
        assert results[NOTIFY]["outcome"] == "applied"  # never started: disposed of normally
        created = [e.payload["id"] for e in outbox.history(state, after_seq=before)
                   if e.type == "receipt.created"]
        assert created.count(written.id) == 1


def test_an_approval_whose_execution_never_started_runs_nothing(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path
) -> None:
    with running(state, tenant, tmp_path, lease_seconds=0.3) as f:
        plan = f.propose()
        plan_store.approve(state, tenant.id, plan.id, approver="ops")  # and the process died right here

        done = disposed(f, plan)

        assert done.results == [] and effects(f.orders_db) == 0


def test_a_new_approval_waits_for_an_action_awaiting_recovery(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path
) -> None:
    with running(state, tenant, tmp_path, lease_seconds=30) as f:
        dead = f.propose()
        plan_store.approve(state, tenant.id, dead.id, approver="ops")
        intents.begin_execution(state, tenant.id, dead.id, only_actions=None, holder="exe_dead", ttl=30)
        record_intent(f, plan_store.get(state, tenant.id, dead.id), example_actions()[0], idempotent=False)
        plan = f.propose()

        with f.client() as c:
            response = c.post(f"/v1/plans/{plan.id}/approve", json={})

        assert response.status_code == 409, response.text
        assert "awaiting crash recovery" in response.json()["error"]["message"]
        assert plan_store.get(state, tenant.id, plan.id).status == "proposed"
        assert effects(f.orders_db) == 0
