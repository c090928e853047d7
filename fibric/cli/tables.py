"""kubectl-style tables of live objects: NAME, ID, a few fields per kind, READY, AGE.

Rows are built from spec documents (GET /v1/specs), which carry the
object's name, spec and status for every kind alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from fibric import timefmt

Row = dict[str, str]


def _operator(item: dict[str, Any]) -> Row:
    spec = item.get("spec") or {}
    return {"STATUS": spec.get("lifecycle", "active"), "POLICY": spec.get("policy", ""),
            "CAPABILITIES": ",".join(spec.get("capabilities", []))}


def _connector(item: dict[str, Any]) -> Row:
    spec, status = item.get("spec") or {}, item.get("status") or {}
    return {"KIND": spec.get("kind", "saas"), "CONNECTION": status.get("connection", "disconnected"),
            "CAPABILITIES": ",".join(spec.get("capabilities", {}))}


def _policy(item: dict[str, Any]) -> Row:
    spec = item.get("spec") or {}
    rego = str(spec.get("rego") or "")
    return {"QUERY": spec.get("query") or "(default)",
            "SHA256": hashlib.sha256(rego.encode()).hexdigest()[:12]}


def _webhook(item: dict[str, Any]) -> Row:
    spec = item.get("spec") or {}
    return {"URL": spec.get("url", ""), "EVENTS": ",".join(spec.get("events", [])),
            "ENABLED": "true" if spec.get("enabled", True) else "false"}


COLUMNS: dict[str, Callable[[dict[str, Any]], Row]] = {
    "Operator": _operator, "Connector": _connector, "Policy": _policy, "Webhook": _webhook,
}


def ready(item: dict[str, Any]) -> str:
    """The Ready condition's status; Unknown until the controller has reported one."""
    for condition in (item.get("status") or {}).get("conditions", []):
        if condition.get("type") == "Ready":
            return str(condition.get("status", "Unknown"))
    return "Unknown"


def age(created_at: str | None, now: datetime | None = None) -> str:
    """'45s', '12m', '5h', '3d', as kubectl prints ages."""
    if not created_at:
        return "<unknown>"
    return duration(((now or timefmt.now()) - timefmt.parse(created_at)).total_seconds())


def duration(seconds: float) -> str:
    """A span of time as kubectl prints ages: '45s', '12m', '5h', '3d' (negative spans as 0s)."""
    seconds = max(0, int(seconds))
    for unit, size, limit in (("s", 1, 120), ("m", 60, 120 * 60), ("h", 3600, 48 * 3600)):
        if seconds < limit:
            return f"{seconds // size}{unit}"
    return f"{seconds // 86400}d"


def rows(kind: str, items: Sequence[dict[str, Any]]) -> list[Row]:
    return [
        {"NAME": item["metadata"]["name"], "ID": item.get("id", ""), **COLUMNS[kind](item),
         "READY": ready(item), "AGE": age(item.get("created_at"))}
        for item in items
    ]


def render(table: Sequence[Row], headers: Sequence[str] | None = None) -> str:
    """Left-aligned columns separated by three spaces; the last column is not padded."""
    if headers is None:
        headers = list(table[0]) if table else []
    widths = [max([len(h)] + [len(str(r.get(h, ""))) for r in table]) for h in headers]
    lines = []
    for cells in [list(headers)] + [[str(r.get(h, "")) for h in headers] for r in table]:
        lines.append("   ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    return "\n".join(lines)
