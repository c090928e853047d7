"""/v1/plans: list, read and approve the execution plans operators propose.

Approve never runs anything itself. It checks the plan (404 for none or
another tenant's; 409 `plan_not_approvable` unless `proposed`; 400 for
`only_actions` the plan does not have; 409 `conflict` when a `digest` is
given and is not the plan's, so what runs is what the approver saw), moves
it to `approved` with a compare-and-set (so of two racing approvals one wins
and the other is 409), and hands it to the executor hook, `app.state.executor`, which disposes of
each action against the policy and returns the plan as it stands afterwards
(fibric/controller/executor.py; a single-flight collision is 409 `conflict`
naming the entity, and the plan is left `proposed`).

Until an executor is configured, approve fails closed: 500 `internal_error`
saying so, and the plan stays `proposed`, so approving again later works.
A 500 rather than a 409, because nothing is wrong with the plan or the
request: this server cannot execute (see docs/api.md).
"""

from __future__ import annotations

import inspect
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from fibric import errors, store
from fibric.api import auth, context, objects, pagination, routing, schemas, workers
from fibric.api import errors as api_errors
from fibric.store import plans, views

router = APIRouter(prefix="/v1/plans", tags=["plans"], responses=api_errors.RESPONSES,
                   route_class=routing.Route)

Reader = Annotated[store.Principal, Depends(auth.require("plans:read"))]
Approver = Annotated[store.Principal, Depends(auth.require("plans:approve"))]
Status = Literal["proposed", "approved", "executed", "blocked"]
Ref = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
ActionKey = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class PlanApproval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approver: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = Field(
        default=None,
        description="Who approves; recorded on every resulting receipt. Defaults to the API key's id.",
    )
    only_actions: list[ActionKey] | None = Field(
        default=None, min_length=1, description="Idempotency keys of the actions to run; omit for all."
    )
    digest: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = Field(
        default=None,
        description="The plan's `digest` as you reviewed it; when given it must equal the plan's, else 409.",
    )


@router.get("", summary="List execution plans", **schemas.returns(schemas.ExecutionPlanList))
def list_plans(
    ctx: context.Ctx,
    principal: Reader,
    page_params: pagination.Params,
    status: Annotated[Status | None, Query(description="proposed, approved, executed or blocked.")] = None,
    operator_id: Annotated[Ref | None, Query(description="Only plans proposed by this operator.")] = None,
) -> JSONResponse:
    def fetch(before_seq: int | None, limit: int) -> list[plans.Plan]:
        return plans.list_plans(ctx.state, principal.tenant_id, status=status, operator_id=operator_id,
                                limit=limit, before_seq=before_seq)

    page = pagination.paginate(fetch, page_params)
    return JSONResponse(pagination.envelope(page, [views.plan_summary(p) for p in page.items]))


@router.get("/{plan_id}", summary="Retrieve a proposed plan",
            **schemas.returns(schemas.ExecutionPlan, 200, 404))
def retrieve_plan(ctx: context.Ctx, principal: Reader, plan_id: str) -> JSONResponse:
    objects.check_ref("plan", plan_id)
    return JSONResponse(views.plan(plans.get(ctx.state, principal.tenant_id, plan_id)))


@router.post("/{plan_id}/approve", summary="Approve and execute a plan",
             **schemas.returns(schemas.ExecutionPlan, 200, 404, 409, 413))
async def approve_plan(
    request: Request,
    ctx: context.Ctx,
    principal: Approver,
    plan_id: str,
    body: Annotated[PlanApproval | None, Body()] = None,
) -> JSONResponse:
    objects.check_ref("plan", plan_id)
    plan = await workers.run(plans.get, ctx.state, principal.tenant_id, plan_id)
    if plan.status != "proposed":
        raise plans.not_approvable(plan)
    if body is not None and body.digest is not None and body.digest != plan.digest:
        raise errors.Conflict(
            f"Plan {plan.id} does not match the digest you approved ({body.digest}); its digest is "
            f"{plan.digest}. Review the plan again before approving."
        )
    only = body.only_actions if body is not None else None
    if only is not None:
        _check_subset(plan, only)
    executor = context.executor_of(request)
    if executor is None:
        return api_errors.error_response(
            api_errors.request_id(request), 500, "internal_error",
            f"Plan {plan.id} was not approved: this server has no executor configured, so nothing "
            "can run. The plan is unchanged (still proposed); approve it again once an executor runs.",
        )
    approver = body.approver if body is not None and body.approver else principal.key_id
    approved = await workers.run(
        lambda: plans.approve(ctx.state, principal.tenant_id, plan.id, approver=approver)
    )
    if inspect.iscoroutinefunction(executor.execute):
        disposed = await executor.execute(approved, only_actions=only)
    else:
        # A plain executor calls tools, which may take seconds: keep it off the quick threads.
        disposed = await workers.run_slow(lambda: executor.execute(approved, only_actions=only))
    return JSONResponse(views.plan(disposed))


def _check_subset(plan: plans.Plan, only: list[str]) -> None:
    known = {a.get("idempotency_key") for a in plan.actions}
    problems = [
        errors.SpecProblem(f"plan {plan.id} has no action with idempotency_key '{key}'",
                           path=f"only_actions[{n}]")
        for n, key in enumerate(only) if key not in known
    ]
    if problems:
        raise errors.SpecInvalid(problems)
