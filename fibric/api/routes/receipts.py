"""/v1/receipts: read the append-only receipt ledger (DuckDB), newest first.

Receipts are written by the executor, never through the API; these routes
only read, always within the caller's tenant. Filters run in SQL, so pages
are exact and cursors stable while receipts are appended.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from fibric import errors, store
from fibric.api import auth, context, objects, pagination, routing, schemas
from fibric.api import errors as api_errors
from fibric.store import audit_sql, receipts, views

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


class ReceiptQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sql: Annotated[str, StringConstraints(min_length=1, max_length=20_000)] = Field(
        description="One read-only SELECT over the table `receipts` (docs/receipts.md): your tenant's only.")
    max_rows: int = Field(default=1000, ge=1, le=audit_sql.MAX_ROWS,
                          description="Rows to return at most; `truncated` says whether there were more.")


@router.post("/query", summary="Query receipts with SQL",
             **schemas.returns(schemas.ReceiptQueryResult, 200, 400, 413))
@routing.slow
def query_receipts(
    ctx: context.Ctx, principal: Reader, body: Annotated[ReceiptQuery, Body()]
) -> JSONResponse:
    """Run one SELECT over a private, locked-down copy of the caller's tenant's receipts.

    The copy holds nothing else, cannot reach files or the network, and the
    query is bounded in rows and time; the ledger goes on taking appends.
    """
    try:
        result = audit_sql.query_ledger(ctx.receipts, principal.tenant_id, body.sql, max_rows=body.max_rows)
    except audit_sql.QueryRejected as e:
        raise errors.SpecInvalid([errors.SpecProblem(str(e), path="sql")]) from e
    return JSONResponse({
        "object": "receipt_query",
        "columns": [{"name": n, "type": t} for n, t in zip(result.columns, result.types, strict=True)],
        "rows": result.rows, "row_count": len(result.rows), "truncated": result.truncated,
    })
