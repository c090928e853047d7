"""/v1/policies: list, read, create and delete Policy specs (docs/api.md).

A policy's Rego travels inline through the API; the representation shows its
query and the SHA-256 of its source, which receipts record as the policy
version that decided.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from fibric import policies, specs, store
from fibric.api import auth, context, error_responses, objects, pagination, routing, schemas, writes
from fibric.controller import replay
from fibric.store import receipt_store

router = APIRouter(prefix="/v1/policies", tags=["policies"], responses=error_responses.RESPONSES,
                   route_class=routing.Route)

Reader = Annotated[store.Principal, Depends(auth.require("policies:read"))]
Writer = Annotated[store.Principal, Depends(auth.require("policies:write"))]

_FIELDS = {"metadata.name": "name", "metadata.labels": "labels", "spec": ""}
_PACKAGE = re.compile(r"^\s*package\s+([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)", re.M)


class PolicyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Unique slug within the tenant.")
    rego: str = Field(description="Rego source of the policy module.")
    query: str | None = Field(
        default=None, description="Query returning the decision; defaults to data.<package>.decision."
    )
    test_rego: list[str] | None = Field(default=None, description="Inline Rego unit-test modules.")
    labels: dict[str, str] | None = None


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rego: str = Field(max_length=1_000_000, description="Rego source of the candidate policy.")
    query: str | None = Field(
        default=None, description="Query returning the decision; defaults to data.<package>.decision."
    )
    since: str | None = Field(
        default=None, description="Only receipts written since: a duration back from now (7d, 24h, 30m) "
                                  "or an RFC 3339 time; all of them when absent.")
    operator: str | None = Field(default=None, description="Only this operator's receipts (op_... or name).")


def default_query(rego: str) -> str | None:
    """`data.<package>.decision`, the query used when a policy names none."""
    match = _PACKAGE.search(rego)
    return f"data.{match.group(1)}.decision" if match else None


def represent(obj: store.StoredObject) -> dict[str, Any]:
    rego = str(obj.spec.get("rego") or "")
    return {
        "id": obj.id,
        "object": "policy",
        "name": obj.name,
        "query": obj.spec.get("query") or default_query(rego),
        "sha256": hashlib.sha256(rego.encode()).hexdigest(),
        **objects.common(obj),
    }


@router.get("", summary="List policies", **schemas.returns(schemas.PolicyList))
def list_policies(ctx: context.Ctx, principal: Reader, page_params: pagination.Params) -> JSONResponse:
    page = pagination.paginate(objects.fetcher(ctx, principal, ["Policy"]), page_params)
    return JSONResponse(pagination.envelope(page, [represent(o) for o in page.items]))


@router.post("", summary="Create a policy", **schemas.returns(schemas.Policy, 201, 409, 413))
def create_policy(ctx: context.Ctx, principal: Writer, body: PolicyCreate) -> JSONResponse:
    spec: dict[str, Any] = {"rego": body.rego}
    if body.query is not None:
        spec["query"] = body.query
    if body.test_rego is not None:
        spec["test_rego"] = body.test_rego
    data = {
        "apiVersion": specs.API_VERSION,
        "kind": "Policy",
        "metadata": {"name": body.name, "labels": body.labels or {}},
        "spec": spec,
    }
    _, obj = writes.create(ctx, principal, "Policy", data, _FIELDS)
    return JSONResponse(represent(obj), status_code=201)


@router.get("/{policy_id}", summary="Retrieve a policy", **schemas.returns(schemas.Policy, 200, 404))
def retrieve_policy(ctx: context.Ctx, principal: Reader, policy_id: str) -> JSONResponse:
    return JSONResponse(represent(objects.get(ctx, principal, "Policy", policy_id)))


@router.delete("/{policy_id}", summary="Delete a policy (409 while an operator is bound to it)",
               **schemas.returns(schemas.Deleted, 200, 404, 409))
def delete_policy(ctx: context.Ctx, principal: Writer, policy_id: str) -> JSONResponse:
    change = writes.delete(ctx, principal, "Policy", policy_id)
    return JSONResponse({"id": change.id, "object": "policy", "deleted": True})


@router.post("/{policy_id}/replay", summary="Replay recorded decisions against a candidate policy",
             **schemas.returns(schemas.PolicyReplay, 200, 400, 404, 413))
@routing.slow
def replay_policy(ctx: context.Ctx, principal: Reader, policy_id: str, body: ReplayRequest) -> JSONResponse:
    """Re-evaluate the decision records of this policy's receipts with the candidate; nothing changes.

    The candidate runs in an embedded engine of its own (one worker process,
    the installation's per-decision budget), never in the live decisions' workers.
    """
    obj = objects.get(ctx, principal, "Policy", policy_id)
    since = replay.parse_since(body.since)
    operator_id = objects.get(ctx, principal, "Operator", body.operator).id if body.operator else None
    candidate = policies.compile(body.rego, query=body.query, name="candidate.rego", field_path="rego")
    engine = policies.EmbeddedEngine(workers=1, timeout=ctx.settings.policies.timeout_ms / 1000)
    try:
        report = replay.replay(receipt_store.StoreLedger(ctx.state), engine, principal.tenant_id, obj.id,
                               candidate, since=since, operator_id=operator_id)
    finally:
        engine.close()
    return JSONResponse(report.to_dict())
