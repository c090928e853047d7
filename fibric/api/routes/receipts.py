"""/v1/receipts: read the append-only receipt ledger (DuckDB), newest first.

Receipts are written by the executor, never through the API; these routes
only read, always within the caller's tenant. Filters run in SQL, so pages
are exact and cursors stable while receipts are appended.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import StringConstraints

from fibric import store
from fibric.api import auth, context, objects, pagination, routing, schemas
from fibric.api import errors as api_errors
from fibric.store import receipts, views

router = APIRouter(prefix="/v1/receipts", tags=["receipts"], responses=api_errors.RESPONSES,
                   route_class=routing.Route)

Reader = Annotated[store.Principal, Depends(auth.require("receipts:read"))]
Decision = Literal["ALLOW", "ALERT", "BLOCK", "DEDUP"]
Ref = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
EntityKey = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")]


@router.get("", summary="List receipts", **schemas.returns(schemas.ReceiptList))
def list_receipts(
    ctx: context.Ctx,
    principal: Reader,
    page_params: pagination.Params,
    operator_id: Annotated[Ref | None, Query(description="Only receipts produced by this operator.")] = None,
    entity_key: Annotated[EntityKey | None, Query(description="Only receipts touching this entity.")] = None,
    decision: Annotated[Decision | None, Query(description="ALLOW, ALERT, BLOCK or DEDUP.")] = None,
) -> JSONResponse:
    def fetch(before_seq: int | None, limit: int) -> list[receipts.Receipt]:
        return ctx.receipts.list_receipts(principal.tenant_id, operator_id=operator_id,
                                          entity_key=entity_key, decision=decision,
                                          limit=limit, before_seq=before_seq)

    page = pagination.paginate(fetch, page_params)
    return JSONResponse(pagination.envelope(page, [views.receipt_summary(r) for r in page.items]))


@router.get("/{receipt_id}", summary="Retrieve a receipt", **schemas.returns(schemas.Receipt, 200, 404))
def retrieve_receipt(ctx: context.Ctx, principal: Reader, receipt_id: str) -> JSONResponse:
    objects.check_ref("receipt", receipt_id)
    return JSONResponse(views.receipt(ctx.receipts.get(principal.tenant_id, receipt_id)))
