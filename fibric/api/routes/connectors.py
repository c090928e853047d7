"""/v1/connectors: the reference's connector routes, over Connector specs.

Connectors are declared as specs (apply); the API lists, reads and deletes
them. The reference's `name` is the spec's `display_name` (else the object's
name), `capabilities` are the keys of the spec's capability map, and
`status`, `tools` and `last_synced_at` are what the controller observed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from fibric import errors, store
from fibric.api import auth, context, error_responses, objects, pagination, routing, schemas, writes
from fibric.store import pin_store

router = APIRouter(prefix="/v1/connectors", tags=["connectors"], responses=error_responses.RESPONSES,
                   route_class=routing.Route)

ConnectorKind = Literal["saas", "hardware", "operator"]
Reader = Annotated[store.Principal, Depends(auth.require("connectors:read"))]
Writer = Annotated[store.Principal, Depends(auth.require("connectors:write"))]


def represent(obj: store.StoredObject, *, detail: bool = False) -> dict[str, Any]:
    spec, status = obj.spec, obj.status
    data: dict[str, Any] = {
        "id": obj.id,
        "object": "connector",
        "name": spec.get("display_name") or obj.name,
        "kind": spec.get("kind", "saas"),
        "transport": "mcp",
        "capabilities": list(spec.get("capabilities", {})),
        "status": status.get("connection", "disconnected"),
    }
    if detail:
        data["tools"] = list(status.get("tools", []))
        data["last_synced_at"] = status.get("last_synced_at")
    data.update(objects.common(obj))
    return data


@router.get("", summary="List connectors", **schemas.returns(schemas.ConnectorList))
def list_connectors(
    ctx: context.Ctx,
    principal: Reader,
    page_params: pagination.Params,
    capability: Annotated[
        str | None, Query(description="Only connectors that fulfil this capability.")
    ] = None,
    kind: Annotated[ConnectorKind | None, Query(description="saas, hardware or operator.")] = None,
) -> JSONResponse:
    def keep(obj: store.StoredObject) -> bool:
        if capability is not None and capability not in obj.spec.get("capabilities", {}):
            return False
        return kind is None or obj.spec.get("kind", "saas") == kind

    filtered = capability is not None or kind is not None
    page = pagination.paginate(
        objects.fetcher(ctx, principal, ["Connector"]), page_params, keep=keep if filtered else None
    )
    return JSONResponse(pagination.envelope(page, [represent(o) for o in page.items]))


@router.get("/{connector_id}", summary="Retrieve a connector", **schemas.returns(schemas.Connector, 200, 404))
def retrieve_connector(ctx: context.Ctx, principal: Reader, connector_id: str) -> JSONResponse:
    return JSONResponse(represent(objects.get(ctx, principal, "Connector", connector_id), detail=True))


@router.delete("/{connector_id}", summary="Delete a connector", **schemas.returns(schemas.Deleted, 200, 404))
def delete_connector(ctx: context.Ctx, principal: Writer, connector_id: str) -> JSONResponse:
    change = writes.delete(ctx, principal, "Connector", connector_id)
    return JSONResponse({"id": change.id, "object": "connector", "deleted": True})


@router.post("/{connector_id}/ack", summary="Acknowledge a connector's tool definitions",
             **schemas.returns(schemas.Connector, 200, 404, 409))
def ack_connector(ctx: context.Ctx, principal: Writer, connector_id: str) -> JSONResponse:
    """Accept the tools as listed now as the new pins, clearing ToolsChanged (`fibric connector ack`)."""
    obj = objects.get(ctx, principal, "Connector", connector_id)
    runtime = ctx.controller if isinstance(ctx.controller, context.ToolAcknowledger) else None
    if runtime is None or not runtime.acknowledge_tools(obj.tenant_id, obj.name):
        # No runtime here runs it: pin what the status shows; runtimes re-read pins on their next ensure.
        listed = obj.status.get("tool_hashes")
        hashes = {str(k): str(v) for k, v in listed.items()} if isinstance(listed, dict) else {}
        if not hashes:
            raise errors.Conflict(f"connector {obj.name} has not listed its tools yet; nothing to ack")
        pin_store.SQLPinStore(ctx.state).acknowledge(obj.tenant_id, obj.name, hashes)
        if ctx.controller is not None:
            ctx.controller.notify(obj.tenant_id, "Connector", obj.name)
    return JSONResponse(represent(ctx.state.get_object(obj.tenant_id, "Connector", obj.name), detail=True))
