"""/v1/secrets (additive): a tenant's secrets, which its specs name instead of server variables.

A value goes in once (PUT) and never comes out: lists and responses show the
name and a fingerprint only. Specs reference a secret by name
(`bearer_token_ref` of an HTTP connector, `secret_ref` of a webhook); a
secret still referenced cannot be deleted (409 naming the referrers). After
a change the controller is told about every object that names the secret,
so a connector reconnects with the new token (docs/security.md#secrets).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from fibric import errors, specs, store, timefmt, trust
from fibric.api import auth, context, error_responses, pagination, routing, schemas, writes
from fibric.controller import applier
from fibric.store import secretbox, vault

router = APIRouter(prefix="/v1/secrets", tags=["secrets"], responses=error_responses.RESPONSES,
                   route_class=routing.Route)

Reader = Annotated[store.Principal, Depends(auth.require("secrets:read"))]
Writer = Annotated[store.Principal, Depends(auth.require("secrets:write"))]
SecretName = Annotated[str, Path(description="The secret's name, e.g. orders-token.", max_length=200)]


class SecretValue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(min_length=1, max_length=vault.MAX_VALUE_BYTES, repr=False,
                       description="The secret; stored sealed and never returned.")


def represent(info: vault.SecretInfo) -> dict[str, Any]:
    return {"object": "secret", "name": info.name, "fingerprint": info.fingerprint,
            "created_at": timefmt.rfc3339(info.created_at), "updated_at": timefmt.rfc3339(info.updated_at)}


@router.get("", summary="List secrets (names and fingerprints, never values)",
            **schemas.returns(schemas.SecretList))
def list_secrets(ctx: context.Ctx, principal: Reader, page_params: pagination.Params) -> JSONResponse:
    def fetch(before_seq: int | None, limit: int) -> list[vault.SecretInfo]:
        return vault.page(ctx.state, principal.tenant_id, limit=limit, before_seq=before_seq)

    page = pagination.paginate(fetch, page_params)
    return JSONResponse(pagination.envelope(page, [represent(i) for i in page.items]))


@router.put("/{name}", summary="Set a secret (created, or its value replaced)",
            **schemas.returns(schemas.Secret, 200, 413, also=(201,)))
def set_secret(
    ctx: context.Ctx, principal: Writer, name: SecretName, body: Annotated[SecretValue, Body()]
) -> JSONResponse:
    _check_name(name)
    info, created = vault.put(ctx.state, _box(ctx), principal.tenant_id, name, body.value)
    writes.notify(ctx, principal, _referrers(ctx, principal, name))
    return JSONResponse(represent(info), status_code=201 if created else 200)


@router.delete("/{name}", summary="Delete a secret (409 while a spec names it)",
               **schemas.returns(schemas.Deleted, 200, 404, 409))
def delete_secret(ctx: context.Ctx, principal: Writer, name: SecretName) -> JSONResponse:
    if vault.info(ctx.state, principal.tenant_id, name) is None:
        raise errors.NotFound(f"No such secret: '{name}'")
    users = _referrers(ctx, principal, name)
    if users:
        named = ", ".join(f"{c.kind.lower()}/{c.name}" for c in users)
        raise errors.Conflict(f"secret '{name}' is named by {named}; change those specs first")
    vault.delete(ctx.state, principal.tenant_id, name)
    return JSONResponse({"id": name, "object": "secret", "deleted": True})


def _check_name(name: str) -> None:
    try:
        specs.models.HttpTransport(url="https://x.invalid", bearer_token_ref=name)
    except ValueError as e:
        raise errors.SpecInvalid(errors.SpecProblem(
            "must be letters, digits, '_', '.' or '-', starting and ending with a letter or digit, "
            "at most 63 characters", path="name")) from e


def _box(ctx: context.Context) -> secretbox.SecretBox:
    return applier.Options.of(ctx.state, ctx.settings, ctx.boundary).sealer(ctx.state)


def _referrers(ctx: context.Context, principal: store.Principal, name: str) -> list[applier.Change]:
    """The tenant's objects whose specs name this secret."""
    found = []
    for kind in ("Connector", "Webhook"):
        for obj in ctx.state.list_objects(principal.tenant_id, kind):
            if name in trust.secret_refs(kind, obj.spec):
                found.append(applier.Change("configured", kind, obj.name, obj.id, obj.generation))
    return found
