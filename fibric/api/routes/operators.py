"""/v1/operators: the reference's operator routes, over Operator specs.

The reference's `status` is the spec's `lifecycle`; its `policy_id` is the id
of the Policy the spec names (`spec.policy`), and a create takes `policy_id`
and stores that policy's name, so specs in Git and the API agree.

`last_run` is the operator's most recent run (fibric/store/run_store.py) in the
reference's shape (run_id, sensed, proposed, applied, at), plus, additively,
its `status` and `error`, so a failed run is visible on the operator. `model_usage`
(additive) counts the requests its runs made to LLM routes, for cost.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from fibric import errors, specs, store, timefmt
from fibric.api import auth, context, error_responses, objects, pagination, routing, schemas, writes
from fibric.store import model_calls, run_store

router = APIRouter(prefix="/v1/operators", tags=["operators"], responses=error_responses.RESPONSES,
                   route_class=routing.Route)

Lifecycle = Literal["active", "paused", "draft"]
Reader = Annotated[store.Principal, Depends(auth.require("operators:read"))]
Writer = Annotated[store.Principal, Depends(auth.require("operators:write"))]

# Spec document paths -> the body fields they came from, for error messages.
_FIELDS = {
    "metadata.name": "name",
    "metadata.labels": "labels",
    "spec.policy": "policy_id",
    "spec.lifecycle": "status",
    "spec": "",
}


class OperatorCreate(BaseModel):
    """The reference's create body, plus the spec's other fields (additive)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Unique slug within the tenant, e.g. ship-risk.")
    capabilities: list[str] = Field(description="Capabilities the operator may propose.")
    policy_id: str = Field(description="The policy that disposes of this operator's actions.")
    model: str | None = Field(default=None, description="Base model; defaults to 'rules'.")
    schedule: str | None = Field(default=None, description="Cron expression (5 fields).")
    subscribes: list[str] | None = None
    sense: list[str] | None = None
    rules: list[dict[str, Any]] | None = None
    status: Lifecycle | None = Field(default=None, description="Lifecycle; defaults to active.")
    labels: dict[str, str] | None = None


def represent(obj: store.StoredObject, policy_id: str | None, last: run_store.Run | None = None,
              usage: model_calls.Usage | None = None) -> dict[str, Any]:
    spec = obj.spec
    counted = usage or model_calls.Usage()
    return {
        "id": obj.id,
        "object": "operator",
        "name": obj.name,
        "status": spec.get("lifecycle", "active"),
        "capabilities": list(spec.get("capabilities", [])),
        "policy_id": policy_id,
        "model": spec.get("model"),
        "schedule": spec.get("schedule"),
        "subscribes": list(spec.get("subscribes", [])),
        "last_run": last_run(last),
        "model_usage": dataclasses.asdict(counted),
        **objects.common(obj),
    }


def last_run(run: run_store.Run | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {"run_id": run.id, "sensed": run.sensed, "proposed": run.proposed, "applied": run.applied,
            "at": timefmt.rfc3339(run.finished_at or run.started_at),
            "status": run.status, "error": run.error}


def policy_ids(
    ctx: context.Context, principal: store.Principal, operators: list[store.StoredObject]
) -> dict[str, str | None]:
    """Policy name -> id for the policies these operators name (None if gone)."""
    found: dict[str, str | None] = {}
    for name in {str(o.spec.get("policy", "")) for o in operators}:
        try:
            found[name] = ctx.state.get_object(principal.tenant_id, "Policy", name).id
        except errors.NotFound:
            found[name] = None
    return found


def _one(ctx: context.Context, principal: store.Principal, obj: store.StoredObject) -> dict[str, Any]:
    last = run_store.latest(ctx.state, principal.tenant_id, [obj.id]).get(obj.id)
    usage = model_calls.usage(ctx.state, principal.tenant_id, [obj.id]).get(obj.id)
    return represent(obj, policy_ids(ctx, principal, [obj])[str(obj.spec.get("policy", ""))], last, usage)


@router.get("", summary="List operators", **schemas.returns(schemas.OperatorList))
def list_operators(
    ctx: context.Ctx,
    principal: Reader,
    page_params: pagination.Params,
    status: Annotated[Lifecycle | None, Query(description="active, paused or draft.")] = None,
) -> JSONResponse:
    page = pagination.paginate(
        objects.fetcher(ctx, principal, ["Operator"]),
        page_params,
        keep=None if status is None else (lambda o: o.spec.get("lifecycle", "active") == status),
    )
    ids = policy_ids(ctx, principal, page.items)
    latest = run_store.latest(ctx.state, principal.tenant_id, [o.id for o in page.items])
    usage = model_calls.usage(ctx.state, principal.tenant_id, [o.id for o in page.items])
    return JSONResponse(pagination.envelope(page, [
        represent(o, ids[str(o.spec.get("policy", ""))], latest.get(o.id), usage.get(o.id))
        for o in page.items]))


@router.post("", summary="Create an operator", **schemas.returns(schemas.Operator, 201, 409, 413))
def create_operator(ctx: context.Ctx, principal: Writer, body: OperatorCreate) -> JSONResponse:
    try:
        policy = objects.get(ctx, principal, "Policy", body.policy_id)
    except errors.NotFound:
        raise errors.SpecInvalid(
            errors.SpecProblem(f"no policy '{body.policy_id}' in this tenant", path="policy_id")
        ) from None
    spec: dict[str, Any] = {"capabilities": body.capabilities, "policy": policy.name}
    optional = {"model": body.model, "schedule": body.schedule, "subscribes": body.subscribes,
                "sense": body.sense, "rules": body.rules, "lifecycle": body.status}
    spec.update({k: v for k, v in optional.items() if v is not None})
    data = {
        "apiVersion": specs.API_VERSION,
        "kind": "Operator",
        "metadata": {"name": body.name, "labels": body.labels or {}},
        "spec": spec,
    }
    _, obj = writes.create(ctx, principal, "Operator", data, _FIELDS)
    return JSONResponse(represent(obj, policy.id), status_code=201)


@router.get("/{operator_id}", summary="Retrieve an operator", **schemas.returns(schemas.Operator, 200, 404))
def retrieve_operator(ctx: context.Ctx, principal: Reader, operator_id: str) -> JSONResponse:
    return JSONResponse(_one(ctx, principal, objects.get(ctx, principal, "Operator", operator_id)))


@router.delete("/{operator_id}", summary="Delete an operator", **schemas.returns(schemas.Deleted, 200, 404))
def delete_operator(ctx: context.Ctx, principal: Writer, operator_id: str) -> JSONResponse:
    change = writes.delete(ctx, principal, "Operator", operator_id)
    return JSONResponse({"id": change.id, "object": "operator", "deleted": True})

