"""/v1/runs: read operator runs (additive, scope operators:read).

A run is what an operator did with what it sensed: the events it consumed,
its counts, the plan it proposed, or the error it failed with; one run, read
by id, also shows every request it made to an LLM route (`model_calls`). Runs are
written by the controller (fibric/controller/operator_runs.py), never by the API.
Another tenant's run reads as 404, like one that never existed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import StringConstraints

from fibric import store, timefmt
from fibric.api import auth, context, error_responses, objects, pagination, routing, schemas
from fibric.store import model_calls, run_store, views

router = APIRouter(prefix="/v1/runs", tags=["runs"], responses=error_responses.RESPONSES,
                   route_class=routing.Route)

Reader = Annotated[store.Principal, Depends(auth.require("operators:read"))]
Status = Literal["running", "succeeded", "failed"]
Ref = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


@router.get("", summary="List runs (additive)", **schemas.returns(schemas.RunList))
def list_runs(
    ctx: context.Ctx,
    principal: Reader,
    page_params: pagination.Params,
    operator_id: Annotated[Ref | None, Query(description="Only runs of this operator (op_...).")] = None,
    status: Annotated[Status | None, Query(description="running, succeeded or failed.")] = None,
) -> JSONResponse:
    def fetch(before_seq: int | None, limit: int) -> list[run_store.Run]:
        return run_store.list_runs(ctx.state, principal.tenant_id, operator_id=operator_id, status=status,
                                   limit=limit, before_seq=before_seq)

    page = pagination.paginate(fetch, page_params)
    return JSONResponse(pagination.envelope(page, [views.run(r) for r in page.items]))


@router.get("/{run_id}", summary="Retrieve a run (additive)", **schemas.returns(schemas.Run, 200, 404))
def retrieve_run(ctx: context.Ctx, principal: Reader, run_id: str) -> JSONResponse:
    objects.check_ref("run", run_id)
    run = run_store.get(ctx.state, principal.tenant_id, run_id)
    calls = model_calls.for_run(ctx.state, principal.tenant_id, run.id)
    return JSONResponse({**views.run(run), "model_calls": [model_call(c) for c in calls]})


def model_call(call: model_calls.StoredCall) -> dict[str, Any]:
    return {
        "id": call.id, "object": "model_call", "route": call.route, "model": call.model, "mode": call.mode,
        "attempt": call.attempt, "plan_id": call.plan_id, "request": call.request, "answer": call.answer,
        "http_status": call.http_status, "finish_reason": call.finish_reason,
        "usage": {"prompt_tokens": call.prompt_tokens, "completion_tokens": call.completion_tokens,
                  "total_tokens": call.total_tokens},
        "latency_ms": call.latency_ms, "outcome": call.outcome, "error": call.error,
        "started_at": timefmt.rfc3339(call.started_at),
    }
