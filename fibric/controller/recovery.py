"""Crash recovery: finish what a dead executor started, without acting twice.

A controller service (started by `fibric serve`): one pass at start, then one
every `interval` seconds, because a dead replica's work only becomes
claimable when its leases expire. Each pass

- claims every unfinished execution whose holder stopped renewing and
  resumes it (Executor.resume): actions with a receipt keep it (and a
  pending intent is completed, its webhook events enqueued now); an intent
  without a receipt is retried only when its tool is annotated idempotent,
  with the same idempotency key, else recorded `in_doubt` and flagged for a
  person (ALERT); actions never started are disposed of normally;
- finishes plans approved by a process that died before it could record
  their execution: nothing ran and which actions were approved is unknown,
  so nothing runs now either (the plan is recorded with no results).
"""

from __future__ import annotations

import logging

from fibric import errors
from fibric.controller import declines, service
from fibric.controller import executor as executor_module
from fibric.store import intents, plan_store

log = logging.getLogger(__name__)


class Recovery(service.Service):
    """The controller service that runs recovery passes, one every `interval` seconds."""

    def __init__(self, executor: executor_module.Executor, *, interval: float = 5.0,
                 backoff: service.Backoff | None = None) -> None:
        super().__init__("executor recovery", poll_seconds=interval, backoff=backoff)
        self.executor = executor

    @property
    def interval(self) -> float:
        return self.poll_seconds

    async def _pass(self) -> bool:
        await recover_once(self.executor)
        # Plans nobody decided on in time: closed, their actions declined (declines.py).
        await self.executor.pool.run(declines.expire_due, self.executor.state)
        return False


async def recover_once(executor: executor_module.Executor) -> int:
    """One recovery pass; returns how many plans it finished."""
    state, ttl = executor.state, executor.lease_seconds
    finished = 0
    run = executor.pool.run
    for tenant_id, plan_id in await run(intents.unstarted_approvals, state, older_than=ttl):
        holder = executor_module.new_holder()
        try:
            claim = await run(intents.begin_execution, state, tenant_id, plan_id, only_actions=[],
                              holder=holder, ttl=ttl)
        except errors.Conflict:
            continue  # its executor recorded it after all
        log.warning("plan %s was approved but its execution never started; recording it with no results",
                    plan_id)
        executor.metrics.lease_taken_over("approval")
        plan = await run(plan_store.get, state, tenant_id, plan_id)
        await executor.run(plan, [], [], claim, known={}, operator="", declining=False)  # none to dispose of
        finished += 1
    for stale in await run(intents.stale_executions, state):
        holder = executor_module.new_holder()
        claimed = await run(intents.claim_execution, state, stale.tenant_id, stale.plan_id, holder, ttl)
        if claimed is None:
            continue  # another replica claimed it first
        log.warning("resuming plan %s, whose executor stopped (holder %s)", stale.plan_id, stale.holder)
        executor.metrics.lease_taken_over("execution")
        try:
            if await executor.resume(claimed) is not None:
                finished += 1
        except errors.FibricError as e:
            log.warning("plan %s: recovery postponed: %s", stale.plan_id, e)
    return finished
