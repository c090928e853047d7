"""Constants and helpers shared by the policy tests."""

from __future__ import annotations

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
