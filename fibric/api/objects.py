"""Reading one tenant's desired-state objects for the routes, and their common fields.

Every read names the principal's tenant, so another tenant's id is simply not
found: the same 404 body as an id that never existed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from fibric import errors, store, timefmt
from fibric.api import context

# Ids (op_..., cn_<name>) and names (slugs). Anything else cannot name an
# object, and is answered 404 before it reaches SQL (PostgreSQL refuses NUL).
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")


def get(ctx: context.Context, principal: store.Principal, kind: str, ref: str) -> store.StoredObject:
    """The tenant's object of `kind` by id or name; NotFound otherwise."""
    check_ref(kind, ref)
    return ctx.state.get_object(principal.tenant_id, kind, ref)


def check_ref(kind: str, ref: str) -> None:
    if not _REF.fullmatch(ref):
        raise errors.NotFound(f"No such {kind.lower()}: '{ref}'")


def fetcher(
    ctx: context.Context, principal: store.Principal, kinds: Sequence[str]
) -> Callable[[int | None, int], list[store.StoredObject]]:
    """A pagination fetch over one or several kinds, merged newest first by `seq`."""

    def fetch(before_seq: int | None, limit: int) -> list[store.StoredObject]:
        rows: list[store.StoredObject] = []
        for kind in kinds:
            rows.extend(
                ctx.state.list_objects(principal.tenant_id, kind, limit=limit, before_seq=before_seq)
            )
        rows.sort(key=lambda o: o.seq, reverse=True)
        return rows[:limit]

    return fetch


def common(obj: store.StoredObject) -> dict[str, Any]:
    """The additive fields every desired-state object carries (docs/api.md)."""
    return {
        "labels": dict(obj.labels),
        "generation": obj.generation,
        "observed_generation": obj.observed_generation,
        "conditions": list(obj.status.get("conditions", [])),
        "created_at": timefmt.rfc3339(obj.created_at),
        "updated_at": timefmt.rfc3339(obj.updated_at),
    }
