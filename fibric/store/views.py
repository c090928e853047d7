"""How stored records read in the API and in webhook payloads: one rendering for both.

The API's routes and the code that writes a webhook event in the same
transaction as a change (fibric/store/outbox.py) call these, so a
`plan.proposed` delivery carries exactly what GET /v1/plans/{id} shows, and a
`run.failed` one what GET /v1/runs/{id} does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fibric import timefmt

if TYPE_CHECKING:
    from fibric.store import plan_store, receipt_store, run_store

_ACTION_FIELDS = frozenset({"capability", "entity_key", "idempotency_key", "args", "decision"})


def run(run: run_store.Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "object": "run",
        "operator_id": run.operator_id,
        "operator": run.operator,
        "trigger": run.trigger,
        "status": run.status,
        "entity_key": run.entity_key or None,
        "event_ids": run.event_ids,
        "sensed": run.sensed,
        "proposed": run.proposed,
        "applied": run.applied,
        "plan_id": run.plan_id,
        "proposed_by": run.proposed_by,
        "error": run.error,
        "started_at": timefmt.rfc3339(run.started_at),
        "finished_at": timefmt.rfc3339(run.finished_at),
    }


def plan_summary(plan: plan_store.Plan) -> dict[str, Any]:
    return {
        "id": plan.id,
        "object": "execution_plan",
        "operator_id": plan.operator_id,
        "operator": plan.operator_name,
        "status": plan.status,
        "action_count": len(plan.actions),
        "proposed_at": timefmt.rfc3339(plan.proposed_at),
        "expires_at": timefmt.rfc3339(plan.expires_at),
    }


def plan(plan: plan_store.Plan) -> dict[str, Any]:
    return {
        "id": plan.id,
        "object": "execution_plan",
        "operator_id": plan.operator_id,
        "operator": plan.operator_name,
        "run_id": plan.run_id,
        "event_ids": plan.event_ids,
        "proposed_by": plan.proposed_by,
        "status": plan.status,
        "actions": [plan_action(a) for a in plan.actions],
        "action_count": len(plan.actions),
        "policy_id": plan.policy_id,
        "digest": plan.digest,
        "proposed_at": timefmt.rfc3339(plan.proposed_at),
        "expires_at": timefmt.rfc3339(plan.expires_at),
        "approver": plan.approver,
        "decided_by": plan.decided_by,
        "decided_at": timefmt.rfc3339(plan.decided_at),
        "reason": plan.reason,
        "results": plan.results,
        "executed_at": timefmt.rfc3339(plan.executed_at),
    }


def plan_action(action: dict[str, Any]) -> dict[str, Any]:
    return {"capability": action.get("capability"), "entity_key": action.get("entity_key"),
            "idempotency_key": action.get("idempotency_key"), "args": action.get("args") or {},
            "decision": action.get("decision"),
            **{k: v for k, v in action.items() if k not in _ACTION_FIELDS}}


def receipt_summary(receipt: receipt_store.Receipt) -> dict[str, Any]:
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


def receipt(receipt: receipt_store.Receipt) -> dict[str, Any]:
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
        "decided_by": receipt.decided_by,
        "request_id": receipt.request_id,
        "trace_id": receipt.trace_id,
        "decision_input": receipt.decision_input,
        "detail": receipt.detail,
        "at": timefmt.rfc3339(receipt.at),
        "prev_hash": receipt.prev_hash,
        "hash": receipt.hash,
    }
