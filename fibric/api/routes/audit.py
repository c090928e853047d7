"""/v1/audit/snapshot: the local admin's way to read the receipt ledger while the server holds it.

DuckDB lets no other process open the ledger file while the server writes
it, so `fibric audit` (verify, checkpoint, sql --all, export), finding the
file held, asks the server for a Parquet snapshot written beside the ledger
and reads that. The caller proves local access with the token the server's
ledger wrote into the data dir, readable by its owner only
(fibric/store/ledger_access.py); no API key is involved, since the local
admin acts across tenants. Tenants' own auditors use POST /v1/receipts/query.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from fibric import errors
from fibric.api import context, routing, schemas
from fibric.api import errors as api_errors
from fibric.store import audit_sql, ledger_access, receipts

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=api_errors.RESPONSES,
                   route_class=routing.Route)
TOKEN_HEADER = "Fibric-Audit-Token"


class SnapshotRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant_id: Annotated[str, StringConstraints(min_length=1, max_length=200,
                                                pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] | None = Field(
        default=None, description="Only this tenant's receipts; omit for every tenant's.")


@router.post("/snapshot", summary="Snapshot the receipt ledger for the local admin",
             **schemas.returns(schemas.AuditSnapshot, 200, 401, 413))
@routing.slow
def snapshot(
    ctx: context.Ctx,
    token: Annotated[str | None, Header(alias=TOKEN_HEADER, description=(
        "The token in the data dir's receipts.duckdb.audit-token, proving local access."))] = None,
    body: Annotated[SnapshotRequest | None, Body()] = None,
) -> JSONResponse:
    if not token or not ledger_access.check(receipts.audit_token(ctx.receipts), token):
        raise errors.Unauthenticated(
            f"Snapshots are for the local admin: send the token from the data dir's "
            f"{ledger_access.token_path(ctx.receipts.path).name} in {TOKEN_HEADER}.")
    tenant_id = body.tenant_id if body is not None else None
    path, rows = audit_sql.snapshot(ctx.receipts, tenant_id)
    return JSONResponse({"object": "audit_snapshot", "path": str(path.resolve()), "rows": rows,
                         "tenant_id": tenant_id})
