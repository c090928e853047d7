"""POST /v1/apply: create or update many spec documents by name, all or nothing.

The same call as `fibric apply`. Each document is validated on its own first
and every problem is reported as `documents[N].<path>`; set-level problems
(duplicates, dangling policy references) come back located the same way,
because each document's source is named `documents[N]`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from fibric import errors, specs, store, trust
from fibric.api import auth, context, error_responses, routing, schemas, writes
from fibric.controller import applier, syncing

router = APIRouter(prefix="/v1/apply", tags=["specs"], responses=error_responses.RESPONSES,
                   route_class=routing.Route)

MAX_DOCUMENTS = 5000


class ApplyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Items stay untyped here so each is validated as a spec and located as documents[N].
    documents: list[Any] = Field(min_length=1, max_length=MAX_DOCUMENTS,
                                 description="Spec documents; a Policy carries its Rego inline.")
    apply_set: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)] | None = (
        Field(default=None, description="Recorded on objects this apply creates; prune scope.")
    )
    prune: bool = Field(default=False, description="Delete objects of apply_set not in documents.")
    dry_run: bool = Field(default=False, description="Report what would change; write nothing.")


def represent(result: applier.ApplyResult) -> dict[str, Any]:
    changes = []
    for change in result.changes:
        item: dict[str, Any] = {"action": change.action, "kind": change.kind, "name": change.name,
                                "id": change.id, "generation": change.generation}
        if change.signing_secret is not None:
            item["signing_secret"] = change.signing_secret
        changes.append(item)
    return {
        "object": "apply_result",
        "dry_run": result.dry_run,
        "changes": changes,
        "warnings": error_responses.field_entries(result.warnings),
    }


def required_scopes(body: ApplyRequest) -> list[str]:
    """The :write scope of every kind named in the documents; all four when pruning."""
    named = {d.get("kind") for d in body.documents if isinstance(d, dict) and _has_kind(d)}
    kinds = list(specs.KINDS) if body.prune else [k for k in specs.KINDS if k in named]
    return [auth.scope_for(k, "write") for k in kinds]


def load(documents: list[Any]) -> list[specs.Loaded]:
    """Each document validated and named `documents[N]`; every problem of every document at once."""
    loaded: list[specs.Loaded] = []
    problems: list[errors.SpecProblem] = []
    for n, raw in enumerate(documents):
        name = f"documents[{n}]"
        if isinstance(raw, dict) and "kind" in raw and not _has_kind(raw):
            problems.append(errors.SpecProblem("kind must be a string", path="kind", file=name))
            continue
        try:
            loaded.append(specs.Loaded(specs.validate_data(raw), specs.Source(file=name)))
        except errors.SpecInvalid as e:
            problems.extend(
                errors.SpecProblem(p.message, path=p.path, file=name) for p in e.problems
            )
    if problems:
        raise errors.SpecInvalid(problems)
    return loaded


def _has_kind(document: dict[str, Any]) -> bool:
    # checked first: a list or object as `kind` is unhashable and cannot name a kind
    return isinstance(document.get("kind"), str)


@router.post("", summary="Apply spec documents (create or update by name, all or nothing)",
             **schemas.returns(schemas.ApplyResult, 200, 409, 413))
@routing.slow
def apply_specs(ctx: context.Ctx, principal: auth.Authenticated, body: ApplyRequest) -> JSONResponse:
    auth.check(principal, required_scopes(body))
    loaded = _load_recorded(ctx, principal, body)
    if any(trust.secret_refs(i.document.kind, i.document.spec_dict()) for i in loaded):  # type: ignore[attr-defined]
        # Naming a secret sends its value where the spec points: as strong as writing it.
        auth.check(principal, ["secrets:write"])
    try:
        result = writes.apply_documents(
            ctx, principal, loaded,
            apply_set=body.apply_set, prune=body.prune, dry_run=body.dry_run,
        )
    except errors.FibricError as e:
        _record(ctx, principal, body, error=str(e))
        raise
    _record(ctx, principal, body)
    return JSONResponse(represent(result))


def _load_recorded(
    ctx: context.Context, principal: store.Principal, body: ApplyRequest
) -> list[specs.Loaded]:
    """`load`, recording invalid documents as a failed attempt of the apply set."""
    try:
        return load(body.documents)
    except errors.SpecInvalid as e:
        _record(ctx, principal, body, error=str(e))
        raise


def _record(ctx: context.Context, principal: store.Principal, body: ApplyRequest,
            *, error: str | None = None) -> None:
    """An apply with an apply set (not a dry run) is the set's latest attempt: GET /v1/sync shows it."""
    if body.apply_set is None or body.dry_run:
        return
    syncing.record(ctx.state, principal.tenant_id, body.apply_set,
                   syncing.documents_revision(body.documents), error=error)
