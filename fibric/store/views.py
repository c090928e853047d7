"""How stored records read in the API and in webhook payloads: one rendering for both.

The API's routes and the code that writes a webhook event in the same
transaction as a change (fibric/store/outbox.py) call these, so a
`plan.proposed` delivery carries exactly what GET /v1/plans/{id} shows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fibric import timefmt

if TYPE_CHECKING:
    from fibric.store import plans, receipts

_ACTION_FIELDS = frozenset({"capability", "entity_key", "idempotency_key", "args", "decision"})


def plan_summary(plan: plans.Plan) -> dict[str, Any]:
    return {
        "id": plan.id,
        "object": "execution_plan",
        "operator_id": plan.operator_id,
        "status": plan.status,
        "action_count": len(plan.actions),
        "proposed_at": timefmt.rfc3339(plan.proposed_at),
    }


def plan(plan: plans.Plan) -> dict[str, Any]:
    return {
        "id": plan.id,
        "object": "execution_plan",
        "operator_id": plan.operator_id,
        "proposed_by": plan.proposed_by,
        "status": plan.status,
        "actions": [plan_action(a) for a in plan.actions],
        "action_count": len(plan.actions),
        "policy_id": plan.policy_id,
        "digest": plan.digest,
        "proposed_at": timefmt.rfc3339(plan.proposed_at),
        "approver": plan.approver,
        "results": plan.results,
        "executed_at": timefmt.rfc3339(plan.executed_at),
    }


def plan_action(action: dict[str, Any]) -> dict[str, Any]:
    return {"capability": action.get("capability"), "entity_key": action.get("entity_key"),
            "idempotency_key": action.get("idempotency_key"), "args": action.get("args") or {},
            "decision": action.get("decision"),
            **{k: v for k, v in action.items() if k not in _ACTION_FIELDS}}


def receipt_summary(receipt: receipts.Receipt) -> dict[str, Any]:
    return {
        "id": receipt.id,
        "object": "receipt",
        "operator": receipt.operator,
        "capability": receipt.capability,
        "entity_key": receipt.entity_key,
        "decision": receipt.decision,
        "outcome": receipt.outcome,
        "at": timefmt.rfc3339(receipt.at),
    }


def receipt(receipt: receipts.Receipt) -> dict[str, Any]:
    return {
        "id": receipt.id,
        "object": "receipt",
        "reseller_id": receipt.reseller_id,
        "tenant_id": receipt.tenant_id,
        "operator": receipt.operator,
        "operator_id": receipt.operator_id,
        "capability": receipt.capability,
        "entity_key": receipt.entity_key,
        "args": receipt.args,
        "triggered_by_event": receipt.triggered_by_event,
        "plan_id": receipt.plan_id,
        "run_id": receipt.run_id,
        "proposed_by": receipt.proposed_by,
        "policy": {**receipt.policy, "decision": receipt.decision, "rule": receipt.rule},
        "policy_id": receipt.policy_id,
        "policy_sha256": receipt.policy_sha256,
        "decision": receipt.decision,
        "idempotency_key": receipt.idempotency_key,
        "outcome": receipt.outcome,
        "approver": receipt.approver,
        "detail": receipt.detail,
        "at": timefmt.rfc3339(receipt.at),
        "prev_hash": receipt.prev_hash,
        "hash": receipt.hash,
    }
