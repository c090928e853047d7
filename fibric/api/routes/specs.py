"""GET /v1/specs: the live desired state as spec documents, the shape `fibric export` prints.

Listing every kind at once needs the read scope of every kind; the kinds are
merged newest first by the store's insertion sequence, so one cursor walks them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from fibric import specs, store, timefmt
from fibric.api import auth, context, error_responses, objects, pagination, routing, schemas
from fibric.controller import applier

router = APIRouter(prefix="/v1/specs", tags=["specs"], responses=error_responses.RESPONSES,
                   route_class=routing.Route)

Kind = Literal["Operator", "Connector", "Policy", "Webhook"]


def represent(obj: store.StoredObject) -> dict[str, Any]:
    labels = dict(obj.labels)
    if obj.apply_set:
        labels[applier.APPLY_SET_LABEL] = obj.apply_set
    return {
        "object": "spec",
        "id": obj.id,
        "apiVersion": specs.API_VERSION,
        "kind": obj.kind,
        "metadata": {"name": obj.name, "labels": labels},
        "spec": obj.spec,
        "generation": obj.generation,
        "status": obj.status,
        "created_at": timefmt.rfc3339(obj.created_at),
        "updated_at": timefmt.rfc3339(obj.updated_at),
    }


@router.get("", summary="List desired state as spec documents", **schemas.returns(schemas.SpecList))
def list_specs(
    ctx: context.Ctx,
    principal: auth.Authenticated,
    page_params: pagination.Params,
    kind: Annotated[Kind | None, Query(description="Operator, Connector, Policy or Webhook.")] = None,
) -> JSONResponse:
    kinds = [kind] if kind is not None else list(specs.KINDS)
    auth.check(principal, [auth.scope_for(k, "read") for k in kinds])
    page = pagination.paginate(objects.fetcher(ctx, principal, kinds), page_params)
    return JSONResponse(pagination.envelope(page, [represent(o) for o in page.items]))
