"""The input document a policy sees for one proposed action (docs/policies.md).

`build_input()` is the only place that shapes it, so every caller (the
executor, plan pre-evaluation, `fibric policy eval`) hands policies the same
document. Counts of recently applied actions are supplied by the caller (the
executor reads them from receipts); the builder only fixes their shape.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from fibric import timefmt
from fibric.policies import failures

_INT64 = (-(2**63), 2**63 - 1)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ALL: Final = object()  # marker in a prune tree: keep everything below


@dataclass(frozen=True)
class Window:
    """Applied actions in the last hour and the last 24 hours."""

    last_hour: int = 0
    last_day: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"last_hour": self.last_hour, "last_day": self.last_day}


@dataclass(frozen=True)
class Counts:
    """Recently applied actions (receipts with outcome `applied`), by scope, for this action."""

    entity: Window = Window()  # this entity_key, any capability, any operator
    operator: Window = Window()  # this operator, any entity
    capability: Window = Window()  # this capability, any entity, this tenant
    entity_capability: Window = Window()  # this entity_key and this capability

    def to_dict(self) -> dict[str, dict[str, int]]:
        return {
            "entity": self.entity.to_dict(),
            "operator": self.operator.to_dict(),
            "capability": self.capability.to_dict(),
            "entity_capability": self.entity_capability.to_dict(),
        }


def build_input(
    *,
    tenant_id: str,
    operator: Mapping[str, Any],
    capability: str,
    entity_key: str,
    idempotency_key: str,
    args: Mapping[str, Any] | None = None,
    event: Mapping[str, Any] | None = None,
    plan_id: str | None = None,
    tool: Mapping[str, Any] | None = None,
    counts: Counts | None = None,
    now: dt.datetime | None = None,
    plan_age_seconds: int | None = None,
    entity_changed_since_plan: bool | None = None,
    tool_changed: bool | None = None,
) -> dict[str, Any]:
    """The input document for one action; raises ValueError if it cannot be JSON exactly.

    `operator` is `{"id", "name", "labels"}`; `event` the stored event envelope
    (None for a scheduled run); `tool` is `{"connector", "name", "annotations"}`
    with the MCP tool's annotations (readOnlyHint, destructiveHint,
    idempotentHint, openWorldHint) as the connector reported them.

    The executor also passes what only exists at disposal time, so a policy
    can refuse to act on a stale picture: `plan_age_seconds` (since the plan
    was proposed), `entity_changed_since_plan` (a newer event about the entity
    arrived after it) and `tool_changed` (the tool's definition drifted from
    its pin). They appear in `context` only when given: a plan preview and
    `fibric policy eval` have no plan to age.
    """
    moment = now or timefmt.now()
    if moment.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    tool = tool or {}
    context: dict[str, Any] = {
        "now": timefmt.rfc3339(moment),
        "now_ns": (moment - _EPOCH) // dt.timedelta(microseconds=1) * 1_000,
        "counts": (counts or Counts()).to_dict(),
    }
    doc = {
        "tenant": {"id": tenant_id},
        "operator": {
            "id": operator.get("id"),
            "name": operator.get("name"),
            "labels": dict(operator.get("labels") or {}),
        },
        "action": {
            "capability": capability,
            "entity_key": entity_key,
            "idempotency_key": idempotency_key,
            "args": dict(args or {}),
        },
        "event": dict(event) if event is not None else None,
        "plan_id": plan_id,
        "tool": {
            "connector": tool.get("connector"),
            "name": tool.get("name"),
            "annotations": dict(tool.get("annotations") or {}),
        },
        "context": context,
    }
    if plan_age_seconds is not None:
        context["plan_age_seconds"] = int(plan_age_seconds)
    if entity_changed_since_plan is not None:
        context["entity_changed_since_plan"] = bool(entity_changed_since_plan)
    if tool_changed is not None:
        context["tool_changed"] = bool(tool_changed)
    try:
        check_json(doc)
    except failures.InputInvalid as e:
        raise ValueError(f"input document: {e.detail}") from None
    return doc


def prune(document: Mapping[str, Any], paths: tuple[tuple[str, ...], ...] | None) -> Mapping[str, Any]:
    """Only the parts of `document` under `paths` (all of it for None).

    The embedded engine hands rego-cpp just what the policy can read: building
    the input on its C API costs about a microsecond per value, and the event
    envelope a policy never looks at would otherwise dominate every decision.
    """
    if paths is None:
        return document
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if child is _ALL:
                break
            node = child
        else:
            node[path[-1]] = _ALL
    return _prune(document, tree)


def _prune(document: Mapping[str, Any], tree: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, below in tree.items():
        if key not in document:
            continue
        value = document[key]
        kept[key] = value if below is _ALL or not isinstance(value, Mapping) else _prune(value, below)
    return kept


def check_json(value: Any, where: str = "input") -> None:
    """Raise InputInvalid unless `value` is JSON that both engines read identically.

    The same rules the embedded engine's input builder enforces: string keys,
    valid Unicode strings, finite numbers, integers within 64 bits. Runs on
    every decision, so the common case is one cheap pass; the path of the bad
    value is only worked out when there is one.
    """
    if not _is_exact_json(value):
        _explain(value, where)


def _is_exact_json(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return value.isascii() or _valid_unicode(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not (key.isascii() or _valid_unicode(key)):
                return False
            if not _is_exact_json(item):
                return False
        return True
    if kind is list or kind is tuple:
        return all(map(_is_exact_json, value))
    if kind is int:
        return _INT64[0] <= value <= _INT64[1]
    if kind is float:
        return math.isfinite(value)
    return kind is bool or value is None


def _explain(value: Any, where: str) -> None:
    """The slow walk that names the first bad value (accepts any Mapping, not only dict)."""
    kind = type(value)
    if kind is str:
        if not _valid_unicode(value):
            raise failures.InputInvalid(f"{where}: strings must be valid Unicode (no lone surrogates)")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if type(key) is not str:
                raise failures.InputInvalid(f"{where}: object key {key!r} is not a string")
            if not _valid_unicode(key):
                raise failures.InputInvalid(f"{where}: strings must be valid Unicode (no lone surrogates)")
            _explain(item, f"{where}.{key}")
    elif kind is list or kind is tuple:
        for n, item in enumerate(value):
            _explain(item, f"{where}[{n}]")
    elif kind is int:
        if not _INT64[0] <= value <= _INT64[1]:
            raise failures.InputInvalid(f"{where}: integer {value} does not fit in 64 bits")
    elif kind is float:
        if not math.isfinite(value):
            raise failures.InputInvalid(f"{where}: number {value} is not valid JSON")
    elif not (kind is bool or value is None):
        raise failures.InputInvalid(f"{where}: {kind.__name__} is not a JSON value")


def _valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
