"""/v1/receipts: the receipts of record, newest first; SQL over the sealed ledger.

Receipts are written by the executor, never through the API; these routes
only read, always within the caller's tenant. List and retrieve read the
system of record (the state store): index reads, exact pages, cursors stable
while receipts are appended. SQL reads the sealed ledger, which trails the
record by the sealer's lag (docs/receipts.md#sealing).

An auditor's SQL (POST /v1/receipts/query) may take seconds and a few
hundred MiB, so few run at once: QUERIES_PER_TENANT per tenant and
QUERIES_PER_SERVER in all. The rest are answered 429 straight away rather
than queued, so waiting queries never pile up on the slow threads or in
memory, and one tenant's auditors cannot take every slot. Queries run on the
slow threads (routing.slow), never on the quick ones or the event loop, and
each in a worker process of the app's query_worker.Pool (made on the first
query, closed with the app), capped in memory and killed past its time
budget, so no query can take the server's own memory or hold its thread long.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from fibric import errors, store
from fibric.api import auth, context, error_responses, objects, pagination, routing, schemas
from fibric.store import audit_sql, query_worker, receipt_store, views

QUERIES_PER_TENANT = 2  # receipt SQL queries one tenant may run at once
QUERIES_PER_SERVER = 8  # ... and every tenant together
QUERY_RETRY_AFTER = 1  # seconds, in the 429's Retry-After: most queries take less

router = APIRouter(prefix="/v1/receipts", tags=["receipts"], responses=error_responses.RESPONSES,
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
    def fetch(before_seq: int | None, limit: int) -> list[receipt_store.Receipt]:
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


class RunningQueries:
    """The receipt queries in flight, by tenant (one per app: app.state.receipt_queries)."""

    def __init__(self, per_tenant: int, per_server: int) -> None:
        self.per_tenant = per_tenant
        self.per_server = per_server
        self._running: Counter[str] = Counter()
        self._lock = threading.Lock()

    def start(self, tenant_id: str) -> str | None:
        """Count a query in, or say why it may not start now."""
        with self._lock:
            if self._running[tenant_id] >= self.per_tenant:
                return (f"This tenant already runs {self.per_tenant} receipt queries, the most it may run "
                        f"at once; retry after {QUERY_RETRY_AFTER} s.")
            if self._running.total() >= self.per_server:
                return (f"The server already runs {self.per_server} receipt queries, the most it runs at "
                        f"once; retry after {QUERY_RETRY_AFTER} s.")
            self._running[tenant_id] += 1
            return None

    def end(self, tenant_id: str) -> None:
        with self._lock:
            self._running[tenant_id] -= 1
            if self._running[tenant_id] <= 0:
                del self._running[tenant_id]


async def running_queries(request: Request) -> RunningQueries:
    """The app's RunningQueries, made on first use; async, so on the event loop and made once."""
    running: RunningQueries | None = getattr(request.app.state, "receipt_queries", None)
    if running is None:
        running = request.app.state.receipt_queries = RunningQueries(QUERIES_PER_TENANT, QUERIES_PER_SERVER)
    return running


async def query_workers(request: Request) -> query_worker.Pool:
    """The app's worker pool for queries (app.state.query_workers), started on first use and closed
    with the app (app.py's lifespan); async, so on the event loop and made once."""
    pool = context.query_workers_of(request.app)
    if pool is None:
        pool = query_worker.Pool(QUERIES_PER_SERVER)
        context.keep_query_workers(request.app, pool)
    return pool


@router.post("/query", summary="Query receipts with SQL",
             **schemas.returns(schemas.ReceiptQueryResult, 200, 400, 413))
@routing.slow
def query_receipts(
    request: Request,
    ctx: context.Ctx,
    principal: Reader,
    running: Annotated[RunningQueries, Depends(running_queries)],
    workers: Annotated[query_worker.Pool, Depends(query_workers)],
    body: Annotated[ReceiptQuery, Body()],
) -> Response:
    """Run one SELECT over a private, locked-down copy of the caller's tenant's receipts.

    The copy holds nothing else, cannot reach files or the network, and the
    query is bounded in rows, bytes (audit_sql.MAX_RESPONSE_BYTES), memory
    and time, in a worker process the server kills past them; the ledger goes
    on taking appends. Over the concurrency limits it does not run at all: 429
    at once.
    """
    refused = running.start(principal.tenant_id)
    if refused is not None:
        return error_responses.error_response(error_responses.request_id(request), 429, "rate_limited",
                                              refused, headers={"Retry-After": str(QUERY_RETRY_AFTER)})
    try:
        result = audit_sql.query_ledger(ctx.sealed, principal.tenant_id, body.sql, max_rows=body.max_rows,
                                        max_bytes=audit_sql.MAX_RESPONSE_BYTES, workers=workers)
    except audit_sql.QueryRejected as e:
        raise errors.SpecInvalid([errors.SpecProblem(str(e), path="sql")]) from e
    finally:
        running.end(principal.tenant_id)
    return Response(result.document(), media_type="application/json")
