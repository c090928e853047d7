"""An executor that loses its lease mid-plan stops calling tools (fail closed), so the new holder
(recovery, or another replica) is the only one acting on the entity."""

from __future__ import annotations

import asyncio
from typing import Any

from fibric import store
from fibric.controller import executor
from fibric.store import intents, leases, plan_store

ENTITY = "order:SO-1"


def test_a_lease_taken_over_while_running_is_noticed(state: store.StateStore, tenant: store.Tenant) -> None:
    plan = plan_store.propose(state, tenant.id, operator_id="op_1", policy_id=None, actions=[
        {"capability": "orders.hold", "entity_key": ENTITY, "idempotency_key": "k1", "args": {}}])
    plan_store.approve(state, tenant.id, plan.id, approver="ops")
    intents.begin_execution(state, tenant.id, plan.id, only_actions=None, holder="exe_a", ttl=0.3)
    assert leases.acquire(state, tenant.id, ENTITY, "exe_a", 0.3)
    none: Any = None
    the_executor = executor.Executor(state, none, none, none, lease_seconds=0.3)

    async def heartbeat_until_lost() -> bool:
        stop, lost = asyncio.Event(), asyncio.Event()
        beat = asyncio.create_task(the_executor._heartbeat(plan, [ENTITY], "exe_a", stop, lost))
        await asyncio.sleep(0.15)
        assert not lost.is_set()  # renewing its own lease is not a loss
        leases.release(state, tenant.id, [ENTITY], "exe_a")  # another holder takes the entity over
        assert leases.acquire(state, tenant.id, ENTITY, "exe_b", 30)
        try:
            await asyncio.wait_for(lost.wait(), timeout=5)
            return True
        finally:
            stop.set()
            await beat

    assert asyncio.run(heartbeat_until_lost())
