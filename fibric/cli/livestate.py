"""Live objects as the CLI compares and prints them: spec documents without server-owned parts.

The server adds ids, status and `fibric.io/` labels (the apply set); none of
that is in Git, so `diff` ignores it and `export` leaves it out, and an
exported file re-applies with no change.

fibric.specs (pydantic models and the CEL runtime) is imported by the
functions that print YAML, so `get` with a table or JSON does not load it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fibric import specs

RESERVED_PREFIX = "fibric.io/"
APPLY_SET_LABEL = "fibric.io/apply-set"
# Export order: what others reference first, so the file reads top-down.
KIND_ORDER = ("Policy", "Connector", "Operator", "Webhook")


def key(item: dict[str, Any]) -> tuple[str, str]:
    return str(item["kind"]), str(item["metadata"]["name"])


def user_labels(labels: dict[str, str] | None) -> dict[str, str]:
    return {k: v for k, v in (labels or {}).items() if not k.startswith(RESERVED_PREFIX)}


def comparable(kind: str, name: str, spec: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """What apply compares: the full spec (defaults filled) and the user's labels."""
    return {"kind": kind, "name": name, "spec": spec, "labels": user_labels(labels)}


def of_live(item: dict[str, Any]) -> dict[str, Any]:
    """A GET /v1/specs item, reduced to what apply compares."""
    kind, name = key(item)
    return comparable(kind, name, dict(item.get("spec") or {}), item["metadata"].get("labels") or {})


def as_applied(item: dict[str, Any]) -> dict[str, Any]:
    """A live comparable as this version stores its spec (defaults of fields added since written out),
    so a spec stored by an older server is not a change; the comparable itself if it does not validate."""
    from pydantic import ValidationError

    from fibric import specs

    try:
        spec = specs.build(item["kind"], item["name"], item["spec"]).spec_dict()
    except (ValidationError, KeyError, ValueError):
        return item
    return {**item, "spec": spec}


def of_local(loaded: specs.Loaded) -> dict[str, Any]:
    doc = loaded.document
    return comparable(doc.kind, doc.name, doc.spec_dict(), dict(doc.metadata.labels))  # type: ignore[attr-defined]


def document(item: dict[str, Any]) -> dict[str, Any]:
    """A comparable as a spec document for YAML, defaults left out (as people write them)."""
    from pydantic import ValidationError

    from fibric import specs

    try:
        return specs.document_data(specs.build(item["kind"], item["name"], item["spec"], item["labels"]))
    except (ValidationError, KeyError, ValueError):
        # Stored by a newer or older server than this CLI: print it as it is.
        metadata: dict[str, Any] = {"name": item["name"]}
        if item["labels"]:
            metadata["labels"] = item["labels"]
        return {"apiVersion": specs.API_VERSION, "kind": item["kind"], "metadata": metadata,
                "spec": item["spec"]}


def ordered(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Dependencies first, then by name: a stable order for files kept in Git."""
    rank = {kind: n for n, kind in enumerate(KIND_ORDER)}
    return sorted(items, key=lambda i: (rank.get(i["kind"], len(rank)), i["name"]))


def to_yaml(items: list[dict[str, Any]]) -> str:
    from fibric import specs

    return specs.to_yaml([document(i) for i in items])
