"""The objects the API returns, as named OpenAPI components (Operator, Event, Receipt, ...).

These models document responses; routes build the JSON themselves (see each
route's `represent`) and do not pay for a validation pass per response. The
schemathesis fuzz in tests/api checks that what routes return conforms to
these models, and the reference-example tests check they carry the
reference's fields. Objects accept fields beyond those listed: v1 grows
additively.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from fibric.api import errors as api_errors

Timestamp = str  # RFC 3339, UTC, ending in Z: 2026-06-14T09:02:11Z
Decision = Literal["ALLOW", "ALERT", "BLOCK", "DEDUP"]


class Condition(BaseModel):
    """Kubernetes-style observed condition, written by the controller."""

    type: str
    status: str = Field(description="True, False or Unknown.")
    reason: str
    message: str
    last_transition_time: Timestamp | None


class Observed(BaseModel):
    """Fields every desired-state object carries (docs/api.md)."""

    labels: dict[str, str]
    generation: int
    observed_generation: int | None
    conditions: list[Condition]
    created_at: Timestamp
    updated_at: Timestamp


class LastRun(BaseModel):
    run_id: str
    sensed: int
    proposed: int
    applied: int
    at: Timestamp


class Operator(Observed):
    id: str = Field(description="op_...")
    object: Literal["operator"]
    name: str
    status: Literal["active", "paused", "draft"]
    capabilities: list[str]
    policy_id: str | None = Field(description="pol_...; null if the bound policy is gone.")
    model: str | None
    schedule: str | None
    subscribes: list[str]
    last_run: LastRun | None = Field(description="null until the operator has run.")


class Tool(BaseModel):
    name: str
    side_effect: bool


class Connector(Observed):
    id: str = Field(description="cn_<name>")
    object: Literal["connector"]
    name: str
    kind: Literal["saas", "hardware", "operator"]
    transport: Literal["mcp"]
    capabilities: list[str]
    status: Literal["connected", "degraded", "disconnected"]
    tools: list[Tool] | None = Field(default=None, description="On retrieve only.")
    last_synced_at: Timestamp | None = Field(default=None, description="On retrieve only.")


class Webhook(Observed):
    id: str = Field(description="whk_...")
    object: Literal["webhook"]
    name: str
    url: str
    events: list[str]
    description: str | None
    status: Literal["enabled", "disabled"]


class WebhookCreated(Webhook):
    signing_secret: str = Field(description="whsec_...; shown in this response only.")


class Policy(Observed):
    id: str = Field(description="pol_...")
    object: Literal["policy"]
    name: str
    query: str | None
    sha256: str = Field(description="SHA-256 of the Rego source; receipts record it.")


class Event(BaseModel):
    """The canonical EventEnvelope, stamped with the key's reseller and tenant."""

    id: str = Field(description="ev_...")
    object: Literal["event"]
    reseller_id: str
    tenant_id: str
    type: str
    entity_key: str
    idempotency_key: str
    occurred_at: Timestamp
    received_at: Timestamp
    dedup: bool | None = Field(default=None, description="On ingest: true when the key was seen before.")
    data: dict[str, Any] | None = Field(default=None, description="On GET /v1/events routes.")


class PlanAction(BaseModel):
    capability: str
    entity_key: str
    idempotency_key: str
    args: dict[str, Any]
    decision: Decision | None = Field(description="The trust decision the executor would apply.")


class PlanResult(BaseModel):
    idempotency_key: str
    decision: Decision
    outcome: str = Field(description="applied, failed, refused, deduplicated or in_doubt.")
    receipt_id: str | None
    rule: str | None = Field(default=None, description="The policy rule, when refused.")


class ExecutionPlanSummary(BaseModel):
    id: str = Field(description="pl_...")
    object: Literal["execution_plan"]
    operator_id: str
    status: Literal["proposed", "approved", "executed", "blocked"]
    action_count: int
    proposed_at: Timestamp


class ExecutionPlan(ExecutionPlanSummary):
    proposed_by: str
    actions: list[PlanAction]
    policy_id: str | None
    digest: str = Field(description="sha256 over the actions as proposed; pass it to approve to bind "
                        "the approval to what was shown.")
    approver: str | None
    results: list[PlanResult] | None = Field(description="Once executed: one result per action run.")
    executed_at: Timestamp | None


class PolicyVerdict(BaseModel):
    decision: Decision
    rule: str | None


class ReceiptSummary(BaseModel):
    id: str = Field(description="rc_...")
    object: Literal["receipt"]
    operator: str
    capability: str
    entity_key: str
    decision: Decision
    outcome: str
    at: Timestamp


class Receipt(ReceiptSummary):
    reseller_id: str
    tenant_id: str
    operator_id: str
    triggered_by_event: str | None
    plan_id: str | None
    run_id: str | None
    proposed_by: str
    args: dict[str, Any]
    policy: PolicyVerdict
    policy_id: str | None
    policy_sha256: str | None
    idempotency_key: str
    approver: str | None
    detail: Any = None
    prev_hash: str = Field(description="hash of the tenant's previous receipt.")
    hash: str = Field(description="SHA-256 of this receipt's canonical JSON.")


class Spec(BaseModel):
    object: Literal["spec"]
    id: str
    apiVersion: str
    kind: Literal["Operator", "Connector", "Policy", "Webhook"]
    metadata: dict[str, Any]
    spec: dict[str, Any]
    generation: int
    status: dict[str, Any]
    created_at: Timestamp
    updated_at: Timestamp


class Change(BaseModel):
    action: Literal["created", "configured", "unchanged", "pruned"]
    kind: str
    name: str
    id: str | None
    generation: int | None
    signing_secret: str | None = None


class ApplyWarning(BaseModel):
    field: str
    message: str


class ApplyResult(BaseModel):
    object: Literal["apply_result"]
    dry_run: bool
    changes: list[Change]
    warnings: list[ApplyWarning]


class Deleted(BaseModel):
    id: str | None
    object: str
    deleted: Literal[True]


class ListEnvelope(BaseModel):
    object: Literal["list"]
    has_more: bool
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


class OperatorList(ListEnvelope):
    data: list[Operator]


class ConnectorList(ListEnvelope):
    data: list[Connector]


class WebhookList(ListEnvelope):
    data: list[Webhook]


class PolicyList(ListEnvelope):
    data: list[Policy]


class EventList(ListEnvelope):
    data: list[Event]


class ExecutionPlanList(ListEnvelope):
    data: list[ExecutionPlanSummary]


class ReceiptList(ListEnvelope):
    data: list[ReceiptSummary]


class SpecList(ListEnvelope):
    data: list[Spec]


def returns(
    model: type[BaseModel], status: int = 200, *errors: int, also: tuple[int, ...] = ()
) -> dict[str, Any]:
    """Route decorator arguments documenting `model` as the success body, plus these error statuses.

    `also` lists other success statuses with the same body. The route returns
    its JSON itself (`response_model=None`): the model is documentation,
    checked by the tests rather than on every response.
    """
    success = {code: {"model": model, "description": model.__doc__ or model.__name__}
               for code in (status, *also)}
    return {
        "response_model": None,
        "status_code": status,
        "responses": {**success, **api_errors.responses(*errors)},
    }
