"""Approving and rejecting a plan: one code path for the JSON API and the approvers' page.

Approve never runs anything itself. It checks the plan (NotFound for none or
another tenant's; `plan_not_approvable` unless `proposed` and unexpired; 400
for `only_actions` the plan does not have; Conflict when a `digest` is given
and is not the plan's, so what runs is what the approver saw), moves it to
`approved` with a compare-and-set that records the deciding key (so of two
racing approvals one wins and the other is 409), and hands it to the
executor hook, which disposes of each action against the policy and returns
the plan as it stands afterwards (fibric/controller/executor.py; a
single-flight collision is 409 `conflict` naming the entity, and the plan is
left `proposed`). A plan found expired is closed as such first
(fibric/controller/declines.py), so the refusal and the record agree.

Until an executor is configured, approve fails closed with NoExecutor and
the plan stays `proposed`, so approving again later works.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from datetime import UTC, datetime

from fibric import errors, store
from fibric.api import context, workers
from fibric.controller import declines
from fibric.store import plan_store


class NoExecutor(errors.FibricError):
    """This server cannot execute: nothing is wrong with the plan or the request (a 500)."""


async def approve(
    ctx: context.Context, executor: context.Executor | None, principal: store.Principal, plan_id: str, *,
    approver: str | None, only: Sequence[str] | None, digest: str | None,
) -> plan_store.Plan:
    """Approve the tenant's plan as `principal` and have the executor dispose of it; the plan after."""
    plan = await workers.run(plan_store.get, ctx.state, principal.tenant_id, plan_id)
    await _check_open(ctx, plan)
    _check_digest(plan, digest)
    if only is not None:
        _check_subset(plan, only)
    if executor is None:
        raise NoExecutor(
            f"Plan {plan.id} was not approved: this server has no executor configured, so nothing "
            "can run. The plan is unchanged (still proposed); approve it again once an executor runs.")
    approved = await workers.run(lambda: plan_store.approve(
        ctx.state, principal.tenant_id, plan.id, approver=approver or principal.key_id,
        by=principal.identity))
    if inspect.iscoroutinefunction(executor.execute):
        disposed: plan_store.Plan = await executor.execute(approved, only_actions=only)
    else:
        # A plain executor calls tools, which may take seconds: keep it off the quick threads.
        disposed = await workers.run_slow(lambda: executor.execute(approved, only_actions=only))
    return disposed


async def reject(
    ctx: context.Context, principal: store.Principal, plan_id: str, *, reason: str, digest: str | None,
) -> plan_store.Plan:
    """Reject the tenant's proposed plan as `principal`: every action declined, with `reason`."""
    return await workers.run(lambda: declines.reject(ctx.state, principal.tenant_id, plan_id, reason=reason,
                                                     by=principal.identity, digest=digest))


async def _check_open(ctx: context.Context, plan: plan_store.Plan) -> None:
    now = datetime.now(UTC)
    if plan.expired(now):
        await workers.run(lambda: declines.expire(ctx.state, plan, now=now))
    if plan.status != "proposed" or plan.expired(now):
        raise plan_store.not_approvable(plan, now=now)


def _check_digest(plan: plan_store.Plan, digest: str | None) -> None:
    if digest is not None and digest != plan.digest:
        raise errors.Conflict(
            f"Plan {plan.id} does not match the digest you approved ({digest}); its digest is "
            f"{plan.digest}. Review the plan again before approving.")


def _check_subset(plan: plan_store.Plan, only: Sequence[str]) -> None:
    known = {a.get("idempotency_key") for a in plan.actions}
    problems = [
        errors.SpecProblem(f"plan {plan.id} has no action with idempotency_key '{key}'",
                           path=f"only_actions[{n}]")
        for n, key in enumerate(only) if key not in known
    ]
    if problems:
        raise errors.SpecInvalid(problems)
