"""Kubernetes-style status conditions, kept as the plain JSON the store holds.

A condition says one observed fact about an object (`Ready`, `PolicyResolved`,
...) as `status` True, False or Unknown, with a machine-readable `reason` and a
human `message`. `last_transition_time` moves only when `status` changes, so a
reader can tell how long an object has been in its current state, and a
reconcile that observes nothing new writes nothing new.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from fibric import timefmt

TRUE = "True"
FALSE = "False"
UNKNOWN = "Unknown"
STATUSES = (TRUE, FALSE, UNKNOWN)

READY = "Ready"
POLICY_RESOLVED = "PolicyResolved"
CAPABILITIES_FULFILLED = "CapabilitiesFulfilled"
CONNECTED = "Connected"
COMPILED = "Compiled"
SYNCED = "Synced"  # the object's apply set last applied (fibric/controller/syncing.py)
STRUCTURED_OUTPUT = "StructuredOutput"  # an operator's LLM route asks for its answer strictly

Condition = dict[str, Any]


def set_condition(
    conditions: Sequence[Condition],
    type: str,
    status: str,
    reason: str,
    message: str,
    now: datetime,
) -> list[Condition]:
    """A new list with condition `type` set; its transition time moves only if `status` changed.

    The input is not modified. An existing condition keeps its place in the
    list, a new one is appended, so the order stays stable across reconciles.
    """
    if status not in STATUSES:
        raise ValueError(f"condition status must be one of {', '.join(STATUSES)}, not {status!r}")
    previous = get_condition(conditions, type)
    transition = timefmt.rfc3339(now)
    if previous is not None and previous.get("status") == status and previous.get("last_transition_time"):
        transition = previous["last_transition_time"]
    updated: Condition = {
        "type": type,
        "status": status,
        "reason": reason,
        "message": message,
        "last_transition_time": transition,
    }
    result = [dict(c) if c.get("type") != type else updated for c in conditions]
    if previous is None:
        result.append(updated)
    return result


def get_condition(conditions: Sequence[Condition], type: str) -> Condition | None:
    """The condition of `type`, or None if it was never set."""
    for condition in conditions:
        if condition.get("type") == type:
            return condition
    return None


def status_of(conditions: Sequence[Condition], type: str) -> str:
    """"True", "False" or "Unknown" (also for a condition never set)."""
    condition = get_condition(conditions, type)
    return str(condition.get("status", UNKNOWN)) if condition is not None else UNKNOWN


def is_true(conditions: Sequence[Condition], type: str) -> bool:
    return status_of(conditions, type) == TRUE


def of(status: dict[str, Any]) -> list[Condition]:
    """The conditions inside an object's status (empty before its first reconcile)."""
    return list(status.get("conditions") or [])
