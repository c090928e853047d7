"""The executor's policy question for one action, with everything known at disposal time.

A plan was proposed a while ago; the world may have moved since. So the
input document carries not only the action and its triggering event but
what only the executor knows: how often this was applied lately (counts
from receipts), how old the plan is, whether a newer event about the entity
arrived after it was proposed, and whether the tool's definition drifted
from its pin. The decision itself is the Decider's, fail-closed: whatever
goes wrong while gathering the input is a BLOCK with the cause as its rule.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fibric import errors, policies, store, timefmt
from fibric.connectors import tools
from fibric.controller import decide
from fibric.store import event_store, plan_store, receipt_store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """The decision on one action and what the receipt says about who decided."""

    decision: policies.Decision
    operator_name: str
    policy_id: str | None
    query: str | None = None  # the query evaluated; None when no policy ran
    record: dict[str, Any] | None = None  # the input document the policy saw, masked (decision_input)
    shadow: dict[str, Any] | None = None  # what the Policy's shadow candidate would have decided

    @property
    def value(self) -> str:
        return self.decision.decision.value

    def policy_record(self) -> dict[str, Any]:
        """The receipt's `policy` object; ALERT is flagged for a person."""
        d = self.decision
        answer: dict[str, Any] = {
            "decision": d.decision.value, "rule": d.rule, "reasons": list(d.reasons),
            "policy_id": d.policy_id or self.policy_id, "policy_sha256": d.policy_sha256 or None,
            "engine": d.engine or None, "failure": d.failure, "flagged": d.decision.value == "ALERT",
        }
        if self.query is not None:  # with policy_sha256, the exact version evaluated
            answer["query"] = self.query
        if self.shadow is not None:  # recorded beside the decision, never part of it
            answer["shadow"] = self.shadow
        return answer


def decide_action(
    state: store.StateStore,
    ledger: receipt_store.Ledger,
    decider: decide.Decider,
    plan: plan_store.Plan,
    action: dict[str, Any],
    binding: tools.Binding | None,
    *,
    now: datetime | None = None,
) -> Verdict:
    """The policy's verdict on `action` of `plan` right now. Blocking (store, ledger, Rego)."""
    moment = now or timefmt.now()
    try:
        operator = state.get_object(plan.tenant_id, "Operator", plan.operator_id)
    except errors.NotFound:
        blocked = policies.unavailable(decider.engine, "operator-missing",
                                       f"operator {plan.operator_id} of plan {plan.id} no longer exists")
        return Verdict(blocked, plan.operator_id, plan.policy_id)
    try:
        doc = _input(state, ledger, plan, operator, action, binding, moment)
    except (ValueError, errors.FibricError) as e:
        return Verdict(policies.unavailable(decider.engine, "input-invalid", str(e)), operator.name,
                       plan.policy_id)
    decided = decider.decide_recorded(plan.tenant_id, operator, doc)
    return Verdict(decided.decision, operator.name, decided.policy_id or plan.policy_id,
                   query=decided.query, record=decided.record, shadow=decided.shadow)


def _input(
    state: store.StateStore,
    ledger: receipt_store.Ledger,
    plan: plan_store.Plan,
    operator: store.StoredObject,
    action: dict[str, Any],
    binding: tools.Binding | None,
    now: datetime,
) -> dict[str, Any]:
    entity_key = str(action.get("entity_key"))
    capability = str(action.get("capability"))
    event_doc = None
    if plan.event_id is not None:
        try:
            event_doc = envelope(event_store.get(state, plan.tenant_id, plan.event_id))
        except errors.NotFound:
            event_doc = None
    return policies.build_input(
        tenant_id=plan.tenant_id,
        operator={"id": operator.id, "name": operator.name, "labels": dict(operator.labels)},
        capability=capability,
        entity_key=entity_key,
        idempotency_key=str(action.get("idempotency_key")),
        args=action.get("args") or {},
        event=event_doc,
        plan_id=plan.id,
        tool=tool_doc(binding),
        counts=recent_counts(ledger, plan.tenant_id, entity_key=entity_key, operator_id=plan.operator_id,
                             capability=capability, now=now),
        now=now,
        plan_age_seconds=max(0, int((now - plan.proposed_at).total_seconds())),
        entity_changed_since_plan=entity_changed_since(state, plan, entity_key),
        tool_changed=binding.tool_changed if binding is not None else None,
    )


def tool_doc(binding: tools.Binding | None) -> dict[str, Any] | None:
    """The policy input's `tool`: the connector (by API id), the MCP tool and its annotations."""
    if binding is None:
        return None
    return {"connector": f"cn_{binding.connector}", "name": binding.tool.name,
            "annotations": dict(binding.tool.annotations)}


def recent_counts(
    ledger: receipt_store.Ledger, tenant_id: str, *, entity_key: str, operator_id: str, capability: str,
    now: datetime,
) -> policies.Counts:
    """Applied actions in the recent windows, from the receipts (the policy input's `context.counts`)."""
    counts = ledger.applied_counts(tenant_id, entity_key=entity_key, operator_id=operator_id,
                                   capability=capability, now=now)
    return policies.Counts(**{scope: policies.Window(hour, day) for scope, (hour, day) in counts.items()})


def entity_changed_since(state: store.StateStore, plan: plan_store.Plan, entity_key: str) -> bool:
    """Whether an event about the entity, other than the plan's own, arrived after the plan was proposed."""
    newest = event_store.list_events(state, plan.tenant_id, entity_key=entity_key, limit=1)
    return bool(newest) and newest[0].id != plan.event_id and newest[0].received_at > plan.proposed_at


def envelope(event: event_store.Event) -> dict[str, Any]:
    """The stored event as the API shows it (GET /v1/events), for the policy input."""
    return {
        "id": event.id, "object": "event", "reseller_id": event.reseller_id, "tenant_id": event.tenant_id,
        "type": event.type, "entity_key": event.entity_key, "idempotency_key": event.idempotency_key,
        "occurred_at": timefmt.rfc3339(event.occurred_at),
        "received_at": timefmt.rfc3339(event.received_at), "data": event.data,
    }
