"""Shared by the decision-record and replay tests: the running product, and a policy that reads a mask."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "executor"))

from executor_support import Fibric, example_actions, running

ROOT = Path(__file__).resolve().parents[2]
SHIP_RISK = ROOT / "examples" / "policies" / "ship_risk.rego"
QUERY = "data.fibric.ship_risk.decision"

# Allows a hold only for the reason the example operator gives, so a decision on the masked
# value ("**masked**") would come out BLOCK: the ALLOW proves the policy saw the real one.
REASON_POLICY = """package fibric.ship_risk

import rego.v1

default decision := {"decision": "BLOCK", "rule": "default-deny"}

decision := {"decision": "ALLOW", "rule": "known-reason"} if {
\tinput.action.capability == "orders.hold"
\tinput.action.args.reason == "will miss ship-by date"
}

decision := {"decision": "ALERT", "rule": "orders.notify"} if input.action.capability == "orders.notify"
"""


def approve(f: Fibric, plan_id: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    with f.client() as c:
        response = c.post(f"/v1/plans/{plan_id}/approve", json=body or {})
    assert response.status_code == 200, response.text
    return {r["idempotency_key"]: r for r in response.json()["results"]}


def policy_doc(rego: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "fibric.io/v1", "kind": "Policy", "metadata": {"name": "ship-risk-guard"},
            "spec": {"rego": rego, "query": QUERY, **spec}}


__all__ = ["Fibric", "approve", "example_actions", "policy_doc", "running"]
