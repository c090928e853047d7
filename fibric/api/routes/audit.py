"""/v1/audit: the local admin's way to read the sealed ledger while the server holds its catalog.

On the embedded default the sealed ledger's catalog is a DuckDB file that the
serving process holds, and DuckDB lets no other process open it then. So
`fibric audit` (verify, sql --all, export), finding it held, asks the server
which Parquet files make up the ledger now (POST /v1/audit/files) and reads
those itself; POST /v1/audit/snapshot writes them into one file instead. The
caller proves local access with the token the server wrote into the data dir,
readable by its owner only (fibric/store/ledger_access.py); no API key is
involved, since the local admin acts across tenants. Tenants' own auditors
use POST /v1/receipts/query.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from fibric import errors
from fibric.api import context, error_responses, routing, schemas
from fibric.store import audit_sql, ledger_access

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=error_responses.RESPONSES,
                   route_class=routing.Route)
TOKEN_HEADER = "Fibric-Audit-Token"


class SnapshotRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant_id: Annotated[str, StringConstraints(min_length=1, max_length=200,
                                                pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] | None = Field(
        default=None, description="Only this tenant's receipts; omit for every tenant's.")


def _local_admin(ctx: context.Context, token: str | None) -> None:
    if not token or not ledger_access.check(ctx.sealed.token, token):
        raise errors.Unauthenticated(
            f"This is for the local admin: send the token from the data dir's "
            f"{ledger_access.token_path(Path(ctx.sealed.catalog)).name} in {TOKEN_HEADER}.")


Token = Annotated[str | None, Header(alias=TOKEN_HEADER, description=(
    "The token in the data dir's ledger.ducklake.audit-token, proving local access."))]


@router.post("/files", summary="List the sealed ledger's Parquet files for the local admin",
             **schemas.returns(schemas.AuditFiles, 200, 401, 413))
@routing.slow
def files(ctx: context.Ctx, token: Token = None, body: Annotated[SnapshotRequest | None, Body()] = None
          ) -> JSONResponse:
    _local_admin(ctx, token)
    tenant_id = body.tenant_id if body is not None else None
    return JSONResponse({"object": "audit_files", "files": ctx.sealed.files(tenant_id),
                         "model_call_files": ctx.sealed.files(tenant_id, table="model_calls"),
                         "tenant_id": tenant_id})


@router.post("/snapshot", summary="Snapshot the sealed ledger into one file for the local admin",
             **schemas.returns(schemas.AuditSnapshot, 200, 401, 413))
@routing.slow
def snapshot(ctx: context.Ctx, token: Token = None, body: Annotated[SnapshotRequest | None, Body()] = None
             ) -> JSONResponse:
    _local_admin(ctx, token)
    tenant_id = body.tenant_id if body is not None else None
    path, rows = audit_sql.snapshot(ctx.sealed, tenant_id)
    return JSONResponse({"object": "audit_snapshot", "path": str(path.resolve()), "rows": rows,
                         "tenant_id": tenant_id})
