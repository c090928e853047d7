"""GET /v1/sync: each apply set's sync status, so a failed apply is seen where `get` is.

A failed apply leaves the last good state live; this says which revision is
live, which was last tried and why it failed (with file:line), and what has
drifted from the set since. Reading it needs the read scope of every kind,
like GET /v1/specs: a set spans every kind, and its errors quote any of them.
An apply set the tenant never applied, or another tenant's, is 404.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from fibric import errors, specs, store, timefmt
from fibric.api import auth, context, error_responses, routing, schemas
from fibric.store import syncs

router = APIRouter(prefix="/v1/sync", tags=["specs"], responses=error_responses.RESPONSES,
                   route_class=routing.Route)

_APPLY_SET = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class SyncDrift(BaseModel):
    """A live object of the set that no longer matches what the set applied."""

    kind: str
    name: str
    change: Literal["deleted", "changed"]


class SyncStatus(BaseModel):
    """One apply set: the revision live, the last attempt and its error, and drift (additive)."""

    object: Literal["sync"]
    apply_set: str
    result: Literal["applied", "failed"] = Field(description="Of the last attempt.")
    revision: str | None = Field(description="Live: Git commit of the folder, or sha256: of its content.")
    applied_at: str | None
    attempted_revision: str
    attempted_at: str
    error: str | None = Field(description="Why the last attempt failed, with file:line; null if applied.")
    drift: list[SyncDrift] = Field(description="As the folder watcher last found it.")
    drift_checked_at: str | None


class SyncList(schemas.ListEnvelope):
    data: list[SyncStatus]


def represent(status: syncs.SyncStatus) -> dict[str, Any]:
    return {
        "object": "sync",
        "apply_set": status.apply_set,
        "result": status.result,
        "revision": status.revision,
        "applied_at": _time(status.applied_at),
        "attempted_revision": status.attempted_revision,
        "attempted_at": timefmt.rfc3339(status.attempted_at),
        "error": status.error,
        "drift": [{"kind": d.kind, "name": d.name, "change": d.change} for d in status.drift],
        "drift_checked_at": _time(status.drift_checked_at),
    }


def _time(value: Any) -> str | None:
    return timefmt.rfc3339(value) if value is not None else None


def _check(principal: store.Principal) -> None:
    auth.check(principal, [auth.scope_for(k, "read") for k in specs.KINDS])


@router.get("", summary="List the tenant's apply sets with their sync status", **schemas.returns(SyncList))
def list_sync(ctx: context.Ctx, principal: auth.Authenticated) -> JSONResponse:
    _check(principal)
    found = syncs.list_all(ctx.state, principal.tenant_id)
    return JSONResponse({"object": "list", "data": [represent(s) for s in found], "has_more": False,
                         "next_cursor": None})


@router.get("/{apply_set}", summary="Show one apply set's sync status",
            **schemas.returns(SyncStatus, 200, 404))
def get_sync(ctx: context.Ctx, principal: auth.Authenticated, apply_set: str) -> JSONResponse:
    _check(principal)
    if not _APPLY_SET.fullmatch(apply_set) or len(apply_set) > 63:
        raise errors.NotFound(f"No such apply set: '{apply_set}'")
    return JSONResponse(represent(syncs.get(ctx.state, principal.tenant_id, apply_set)))
