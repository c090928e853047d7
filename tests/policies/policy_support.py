"""Constants and helpers shared by the policy tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SHIP_RISK = EXAMPLES / "policies" / "ship_risk.rego"
SHIP_RISK_TESTS = EXAMPLES / "policies" / "ship_risk_test.rego"
BUDGET = 2.0  # seconds: generous, so a loaded machine never turns a decision into a timeout
ENGINES = ["embedded", "opa"]


def action_input(
    capability: str, sent_last_hour: int | None = None, entity: str = "order:SO-1"
) -> dict[str, Any]:
    """A minimal input document for the example policy."""
    doc: dict[str, Any] = {"action": {"capability": capability, "entity_key": entity,
                            "idempotency_key": f"k:{capability}:{entity}", "args": {}}}
    if sent_last_hour is not None:
        doc["context"] = {"counts": {"entity_capability": {"last_hour": sent_last_hour,
                                                           "last_day": sent_last_hour}}}
    return doc


# Seconds of CPU for n=1000 (about 6 s here), in constant memory: n*n iterations, a set of n results.
RUNAWAY = (
    "package t.runaway\n\nimport rego.v1\n\n"
    'decision := {"decision": "ALLOW", "rule": sprintf("%d", [count({x |\n'
    "\tsome x in numbers.range(1, input.n)\n\tsome y in numbers.range(1, input.n)\n\tx == y\n})])}\n"
)


def alive(pid: int) -> bool:
    """Whether `pid` is a process that can still run (not gone, not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `check` until it holds or `timeout` seconds pass."""
    ends = time.monotonic() + timeout
    while not check():
        if time.monotonic() > ends:
            return False
        time.sleep(0.01)
    return True
