"""Every desired-state write the API makes, through the controller's one apply function.

Routes never write SQL: creates, applies and deletes all end in
`fibric.controller.applier`, exactly like `fibric apply` on the CLI. After a
committed write the controller is told which objects changed, so it can
reconcile them now instead of at its next resync.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fibric import errors, specs, store, trust
from fibric.api import context, objects
from fibric.controller import applier

log = logging.getLogger("fibric.api")


def apply_documents(
    ctx: context.Context,
    principal: store.Principal,
    loaded: Sequence[specs.Loaded],
    *,
    apply_set: str | None = None,
    prune: bool = False,
    dry_run: bool = False,
    create_only: bool = False,
) -> applier.ApplyResult:
    result = applier.apply(
        ctx.state, principal.tenant_id, loaded,
        apply_set=apply_set, prune=prune, dry_run=dry_run, create_only=create_only,
        origin=trust.Origin.TENANT, options=applier.Options.of(ctx.state, ctx.settings, ctx.boundary),
    )
    if not dry_run:
        notify(ctx, principal, [c for c in result.changes if c.action != "unchanged"])
    return result


def delete(ctx: context.Context, principal: store.Principal, kind: str, ref: str) -> applier.Change:
    objects.check_ref(kind, ref)
    change = applier.delete(ctx.state, principal.tenant_id, kind, ref)
    notify(ctx, principal, [change])
    return change


def create(
    ctx: context.Context,
    principal: store.Principal,
    kind: str,
    data: dict[str, Any],
    fields: Mapping[str, str],
) -> tuple[applier.Change, store.StoredObject]:
    """Create one object from a route's body (409 if the name is taken).

    `data` is the spec document the body stands for; `fields` maps document
    paths back to body fields ("spec.policy" -> "policy_id"), so a problem
    names the field the caller actually sent.
    """
    try:
        document = specs.validate_data(data)
        result = apply_documents(
            ctx, principal, [specs.Loaded(document, specs.Source(file=""))], create_only=True
        )
    except errors.SpecInvalid as e:
        raise errors.SpecInvalid([_renamed(p, fields) for p in e.problems]) from e
    change = result.changes[0]
    return change, ctx.state.get_object(principal.tenant_id, kind, change.id or document.name)


def notify(ctx: context.Context, principal: store.Principal, changes: Sequence[applier.Change]) -> None:
    # A failed notify loses nothing: the write is committed and the
    # controller's periodic resync reconciles it anyway. So log, don't fail.
    if ctx.controller is None:
        return
    for change in changes:
        try:
            ctx.controller.notify(principal.tenant_id, change.kind, change.name)
        except Exception:
            log.exception("controller.notify failed for %s '%s'", change.kind, change.name)


def _renamed(problem: errors.SpecProblem, fields: Mapping[str, str]) -> errors.SpecProblem:
    path = problem.path
    for prefix in sorted(fields, key=len, reverse=True):
        if path == prefix or path.startswith((prefix + ".", prefix + "[")):
            path = (fields[prefix] + path[len(prefix):]).lstrip(".")
            break
    return errors.SpecProblem(problem.message, path=path)
