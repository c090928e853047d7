"""/v1/plans: list, read, approve and reject the execution plans operators propose.

What approving and rejecting check, and in what order, is fibric/api/approvals.py,
shared with the approvers' page. Until an executor is configured, approve fails
closed: 500 `internal_error` saying so, and the plan stays `proposed`. A 500
rather than a 409, because nothing is wrong with the plan or the request: this
server cannot execute (see docs/api.md).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from fibric import store
from fibric.api import approvals, auth, context, error_responses, objects, pagination, routing, schemas
from fibric.store import plan_store, views

router = APIRouter(prefix="/v1/plans", tags=["plans"], responses=error_responses.RESPONSES,
                   route_class=routing.Route)

Reader = Annotated[store.Principal, Depends(auth.require("plans:read"))]
Approver = Annotated[store.Principal, Depends(auth.require("plans:approve"))]
Status = Literal["proposed", "approved", "executed", "blocked", "rejected", "expired"]
Ref = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
ActionKey = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class PlanApproval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approver: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = Field(
        default=None,
        description="A free-text note (who, on whose behalf); recorded on every resulting receipt beside "
        "the approving key's id and name (`decided_by`). Defaults to the key's id.",
    )
    only_actions: list[ActionKey] | None = Field(
        default=None, min_length=1, description="Idempotency keys of the actions to run; omit for all."
    )
    digest: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = Field(
        default=None,
        description="The plan's `digest` as you reviewed it; when given it must equal the plan's, else 409.",
    )


class PlanRejection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(min_length=1, max_length=1000)] = Field(
        description="Why; recorded on the plan and on every action's `declined` receipt.")
    digest: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = Field(
        default=None, description="The plan's `digest` as you reviewed it; when given it must match, "
        "else 409.")


@router.get("", summary="List execution plans", **schemas.returns(schemas.ExecutionPlanList))
def list_plans(
    ctx: context.Ctx,
    principal: Reader,
    page_params: pagination.Params,
    status: Annotated[Status | None, Query(
        description="proposed, approved, executed, blocked, rejected or expired.")] = None,
    operator_id: Annotated[Ref | None, Query(description="Only plans proposed by this operator.")] = None,
) -> JSONResponse:
    def fetch(before_seq: int | None, limit: int) -> list[plan_store.Plan]:
        return plan_store.list_plans(ctx.state, principal.tenant_id, status=status, operator_id=operator_id,
                                     limit=limit, before_seq=before_seq)

    page = pagination.paginate(fetch, page_params)
    return JSONResponse(pagination.envelope(page, [views.plan_summary(p) for p in page.items]))


@router.get("/{plan_id}", summary="Retrieve a proposed plan",
            **schemas.returns(schemas.ExecutionPlan, 200, 404))
def retrieve_plan(ctx: context.Ctx, principal: Reader, plan_id: str) -> JSONResponse:
    objects.check_ref("plan", plan_id)
    return JSONResponse(views.plan(plan_store.get(ctx.state, principal.tenant_id, plan_id)))


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
    body = body or PlanApproval()
    try:
        disposed = await approvals.approve(ctx, context.executor_of(request), principal, plan_id,
                                           approver=body.approver, only=body.only_actions,
                                           digest=body.digest)
    except approvals.NoExecutor as e:
        return error_responses.error_response(error_responses.request_id(request), 500, "internal_error",
                                              str(e))
    return JSONResponse(views.plan(disposed))


@router.post("/{plan_id}/reject", summary="Reject a plan",
             **schemas.returns(schemas.ExecutionPlan, 200, 404, 409, 413))
async def reject_plan(
    ctx: context.Ctx,
    principal: Approver,
    plan_id: str,
    body: Annotated[PlanRejection, Body()],
) -> JSONResponse:
    """Nothing runs: each action gets a `declined` receipt, and the plan is `rejected` (409
    `plan_not_approvable` unless it is `proposed` and unexpired)."""
    objects.check_ref("plan", plan_id)
    rejected = await approvals.reject(ctx, principal, plan_id, reason=body.reason, digest=body.digest)
    return JSONResponse(views.plan(rejected))
