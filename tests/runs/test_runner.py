"""The runner's own guarantees, with a stand-in proposer at our own plug point (proposers.Proposer).

Real proposers validate what they return; the runner must still never
store a plan with a capability the operator lacks, must hold one effect
once per plan, must turn any failure into a visible failed run, and must
hand a run's events back when it is cancelled (shutdown).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from runs_support import AT_RISK, apply_examples

from fibric import policies, proposers, store
from fibric.controller import decide, operator_runs, reconcile
from fibric.store import event_store, plan_store, routing_store, run_store

pytestmark = pytest.mark.anyio


class Stand:
    """A proposer that answers what the test says (or waits, or fails)."""

    name = "stand-in"

    def __init__(self, answer: list[proposers.ProposedAction] | None = None, error: Exception | None = None,
                 gate: asyncio.Event | None = None) -> None:
        self.answer = answer or []
        self.error = error
        self.gate = gate
        self.seen: list[proposers.Situation] = []

    async def propose(self, situation: proposers.Situation) -> list[proposers.ProposedAction]:
        self.seen.append(situation)
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.answer


def act(capability: str, key: str, **args: Any) -> proposers.ProposedAction:
    return proposers.ProposedAction(capability=capability, entity_key="order:SO-10884", args=args,
                                    idempotency_key=key)


@pytest.fixture
def runner(state: store.StateStore, engine: policies.Engine) -> operator_runs.Runner:
    return operator_runs.Runner(state, decide.Decider(state, engine, reconcile.CompileCache()))


def queue_one(state: store.StateStore, tenant: store.Tenant, key: str = "e-1") -> routing_store.PendingKey:
    event_store.ingest(state, reseller_id=tenant.reseller_id, tenant_id=tenant.id, type="order.updated",
                       entity_key="order:SO-10884", idempotency_key=key, data=AT_RISK)
    routing_store.route_pending(state)
    [pending] = routing_store.pending_keys(state)
    return pending


async def test_a_capability_the_operator_lacks_fails_the_run_and_stores_no_plan(
    state: store.StateStore, tenant: store.Tenant, runner: operator_runs.Runner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    apply_examples(state, tenant.id)
    stand = Stand([act("orders.hold", "k1", reason="x"), act("orders.delete", "k2")])
    monkeypatch.setattr(proposers, "for_model", lambda *a, **k: stand)
    run = await runner.run_events(queue_one(state, tenant))
    assert run is not None and run.status == "failed"
    assert "orders.delete" in (run.error or "") and plan_store.list_plans(state, tenant.id) == []


async def test_one_plan_holds_each_idempotency_key_once_and_sees_the_events(
    state: store.StateStore, tenant: store.Tenant, runner: operator_runs.Runner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    apply_examples(state, tenant.id)
    stand = Stand([act("orders.hold", "k1", reason="x"), act("orders.hold", "k1", reason="x"),
                   act("orders.notify", "k2", to="owner")])
    monkeypatch.setattr(proposers, "for_model", lambda *a, **k: stand)
    run = await runner.run_events(queue_one(state, tenant))
    assert run is not None and (run.status, run.proposed) == ("succeeded", 2)
    [plan] = plan_store.list_plans(state, tenant.id)
    assert [a["idempotency_key"] for a in plan.actions] == ["k1", "k2"]
    assert plan.proposed_by == "stand-in" and plan.run_id == run.id
    [situation] = stand.seen
    assert [e["idempotency_key"] for e in situation.events] == ["e-1"]
    assert set(situation.events[0]) == {"id", "type", "entity_key", "idempotency_key", "occurred_at", "data"}
    assert [t.capability for t in situation.tools] == ["orders.hold", "orders.notify"]


async def test_an_unexpected_failure_is_a_failed_run_and_the_entity_is_free_again(
    state: store.StateStore, tenant: store.Tenant, runner: operator_runs.Runner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    apply_examples(state, tenant.id)
    monkeypatch.setattr(proposers, "for_model", lambda *a, **k: Stand(error=KeyError("boom")))
    failed = await runner.run_events(queue_one(state, tenant))
    assert failed is not None and failed.status == "failed" and "boom" in (failed.error or "")
    monkeypatch.setattr(proposers, "for_model", lambda *a, **k: Stand([act("orders.hold", "k1", reason="x")]))
    after = await runner.run_events(queue_one(state, tenant, "e-2"))
    assert after is not None and after.status == "succeeded" and after.event_ids != failed.event_ids


@pytest.mark.parametrize("moment", ["while its row is written", "while the model proposes"])
async def test_a_cancelled_run_hands_its_events_back(
    state: store.StateStore, tenant: store.Tenant, runner: operator_runs.Runner,
    monkeypatch: pytest.MonkeyPatch, moment: str,
) -> None:
    """Shutdown at any moment of a run: it ends failed, never left 'running', and its events go back."""
    apply_examples(state, tenant.id)
    stand = Stand(gate=asyncio.Event())
    monkeypatch.setattr(proposers, "for_model", lambda *a, **k: stand)
    committed = threading.Event()
    if moment == "while its row is written":
        real_start = run_store.start

        def slow_start(*args: Any, **kwargs: Any) -> run_store.Run | None:
            run = real_start(*args, **kwargs)
            committed.set()
            time.sleep(0.3)  # the coroutine still waits for this thread when the cancel lands
            return run

        monkeypatch.setattr(run_store, "start", slow_start)
    pending = queue_one(state, tenant)
    task = asyncio.create_task(runner.run_events(pending))
    while not (committed.is_set() or stand.seen):
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [run] = run_store.list_runs(state, tenant.id)
    assert run.status == "failed" and "shut down" in (run.error or "")
    assert routing_store.pending_keys(state) == [pending]  # the next start runs them again
