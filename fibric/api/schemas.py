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

from fibric.api import error_responses

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
    status: Literal["running", "succeeded", "failed"] | None = Field(
        default=None, description="Additive: the run's status.")
    error: str | None = Field(default=None, description="Additive: why the run failed; null otherwise.")


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
    model_usage: ModelUsageCount | None = Field(
        default=None, description="Additive: requests its runs made to LLM routes, counted for cost.")


class ModelUsageCount(BaseModel):
    calls: int = Field(description="Every request, retries included.")
    failures: int = Field(description="Requests that did not end in a valid plan.")
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


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
    disabled_reason: str | None = Field(
        default=None, description="Why it is disabled: spec.enabled false, 410 Gone, or 24 h of failures.")


class WebhookCreated(Webhook):
    signing_secret: str = Field(description="whsec_...; shown in this response only.")


class Policy(Observed):
    id: str = Field(description="pol_...")
    object: Literal["policy"]
    name: str
    query: str | None
    sha256: str = Field(description="SHA-256 of the Rego source; receipts record it.")


class ReplayTally(BaseModel):
    replayed: int
    changed: int = Field(description="Decisions or rules that would change.")
    loosened: int = Field(description="Decisions that would loosen (BLOCK->ALLOW/ALERT, ALERT->ALLOW).")


class ReplayTransition(BaseModel):
    from_: str = Field(alias="from", description="The recorded decision.")
    to: str = Field(description="The candidate's decision.")
    count: int
    loosens: bool


class ReplayChange(BaseModel):
    receipt_id: str
    operator: str
    capability: str
    entity_key: str
    at: str
    from_: dict[str, Any] = Field(alias="from", description="{decision, rule} as recorded.")
    to: dict[str, Any] = Field(description="{decision, rule, reasons} from the candidate.")
    loosened: bool


class PolicyReplay(BaseModel):
    """What a candidate policy would have decided on the policy's recorded decisions (docs/policies.md)."""

    object: Literal["policy_replay"]
    policy_id: str
    candidate_sha256: str = Field(description="SHA-256 of the candidate's Rego source.")
    query: str
    since: str | None
    replayed: int = Field(description="Recorded decisions re-evaluated.")
    skipped: int = Field(description="Receipts of the policy without a decision record (older ones, "
                                     "or where no policy ran): not replayed.")
    masked: int = Field(description="Replayed records with masked fields (evaluated as recorded).")
    changed: int
    decision_changes: int
    loosened: int
    transitions: list[ReplayTransition]
    rule_changes: dict[str, int] = Field(description='"old-rule->new-rule": count.')
    by_operator: dict[str, ReplayTally]
    by_capability: dict[str, ReplayTally]
    changes: list[ReplayChange] = Field(description="The first changed receipts (at most 100).")
    changes_truncated: bool


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
    rule: str | None = Field(default=None, description="The policy rule behind that decision.")
    rationale: str | None = Field(default=None, description="Why the model proposed it: the rule that "
                                  "matched (rules model) or the model's own words (at most 1000 chars).")
    policy_sha256: str | None = Field(
        default=None, description="sha256 of the Rego source that gave `decision`; null when no policy "
        "ran (missing) and on plans from before it was kept.")
    decision_input: dict[str, Any] | None = Field(
        default=None, description="The input document `decision` was evaluated on, masked like a "
        "receipt's (docs/policies.md#decision-records); the receipt keeps its own, taken at execution.")


class KeyIdentity(BaseModel):
    key_id: str = Field(description="key_...: the API key that decided.")
    key_name: str | None = Field(description="Its name, if it was given one.")


class PlanResult(BaseModel):
    idempotency_key: str
    decision: Decision
    outcome: str = Field(description="applied, failed, refused, deduplicated, in_doubt or declined.")
    receipt_id: str | None
    rule: str | None = Field(default=None, description="The policy rule, when refused.")


class ExecutionPlanSummary(BaseModel):
    id: str = Field(description="pl_...")
    object: Literal["execution_plan"]
    operator_id: str
    operator: str | None = Field(description="The operator's name when it proposed the plan.")
    status: Literal["proposed", "approved", "executed", "blocked", "rejected", "expired"]
    action_count: int
    proposed_at: Timestamp
    expires_at: Timestamp | None = Field(description="After this, the plan can no longer be approved.")


class ExecutionPlan(ExecutionPlanSummary):
    run_id: str | None = Field(description="run_...: the run that proposed it.")
    event_ids: list[str] = Field(description="The events that triggered that run.")
    proposed_by: str
    actions: list[PlanAction]
    policy_id: str | None
    digest: str = Field(description="sha256 over the actions as proposed; pass it to approve to bind "
                        "the approval to what was shown.")
    approver: str | None = Field(description="The free-text note given on approval.")
    decided_by: KeyIdentity | None = Field(description="The API key that approved or rejected it.")
    decided_at: Timestamp | None
    reason: str | None = Field(description="Why it was rejected, or that it expired.")
    results: list[PlanResult] | None = Field(
        description="Once disposed: one result per action; actions not approved are `declined`.")
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
    approver: str | None = Field(description="The free-text note given on approval.")
    decided_by: KeyIdentity | None = Field(
        default=None, description="The API key whose decision this carries out: it approved the plan, "
        "or rejected it (a declined action); null for expiry and for receipts from before keys were kept.")
    request_id: str | None = Field(
        default=None, description="The API request (req_...) that disposed of it, as in the access log; "
        "null when a background service did (crash recovery) or for receipts from before ids were kept.")
    trace_id: str | None = Field(
        default=None, description="The OpenTelemetry trace it was disposed of in (32 hex digits); "
        "null when the server does not trace (docs/operations.md#traces).")
    decision_input: dict[str, Any] | None = Field(
        default=None, description="The input document the policy was evaluated on (docs/policies.md), "
        "with the Policy's `mask` paths replaced by \"**masked**\"; what `fibric policy replay` "
        "re-evaluates. Null when no policy ran (declined, deduplicated, policy missing) and for receipts "
        "from before it was kept.")
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


class Secret(BaseModel):
    """A tenant secret as anyone may see it: its name and fingerprint, never its value."""

    object: Literal["secret"]
    name: str
    fingerprint: str = Field(description="HMAC-SHA256 prefix under the deployment's key: tells values apart.")
    created_at: str
    updated_at: str


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


class SecretList(ListEnvelope):
    data: list[Secret]


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
        "responses": {**success, **error_responses.responses(*errors)},
    }


# --- runs ---------------------------------------------------------------------------


class Run(BaseModel):
    """One operator run: what it sensed, what its model proposed, and what became of it (additive)."""

    id: str = Field(description="run_...")
    object: Literal["run"]
    operator_id: str
    operator: str = Field(description="The operator's name when the run started.")
    trigger: Literal["event", "schedule"]
    status: Literal["running", "succeeded", "failed"]
    entity_key: str | None = Field(
        description="The entity an event-triggered run is about; null when scheduled.")
    event_ids: list[str] = Field(description="The events this run consumed, oldest first.")
    sensed: int = Field(description="Events plus items read through sense capabilities.")
    proposed: int = Field(description="Actions the model proposed.")
    applied: int = Field(description="Actions of its plan the executor applied.")
    plan_id: str | None = Field(description="The plan it proposed (or the identical open plan it matched).")
    proposed_by: str | None
    error: str | None = Field(description="Why the run failed; null otherwise.")
    started_at: Timestamp
    finished_at: Timestamp | None
    model_calls: list[ModelCall] | None = Field(
        default=None, description="GET /v1/runs/{id} only: every request the run made to its LLM route.")


class ModelCall(BaseModel):
    """One request to an LLM route (docs/operators.md#model-call-records)."""

    id: str = Field(description="mc_...")
    object: Literal["model_call"]
    route: str
    model: str
    mode: Literal["json_schema", "json_object", "tools"]
    attempt: int = Field(description="1 for the first request, then one more per retry.")
    plan_id: str | None = Field(description="The plan the run stored, if any.")
    request: dict[str, Any] = Field(
        description="The body sent; the operator's sensitive event fields masked.")
    answer: Any = Field(description="The provider's JSON body; null when none came.")
    http_status: int | None
    finish_reason: str | None
    usage: ModelUsage = Field(description="Token counts the provider reported (null when it did not).")
    latency_ms: float
    outcome: Literal["ok", "malformed", "refused", "http_error", "timeout", "connection_error"]
    error: str | None
    started_at: Timestamp


class ModelUsage(BaseModel):
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None


class RunList(ListEnvelope):
    data: list[Run]


# --- receipt ledger and audit -------------------------------------------------------


class ReceiptQueryColumn(BaseModel):
    name: str
    type: str = Field(description="DuckDB type of the column, e.g. VARCHAR, BIGINT, TIMESTAMP.")


class ReceiptQueryResult(BaseModel):
    """The result of one read-only SELECT over the caller's receipts (additive).

    The whole body is at most 4 MiB (docs/receipts.md#query-results): past that, or past max_rows,
    the rows stop early and `truncated` is true.
    """

    object: Literal["receipt_query"]
    columns: list[ReceiptQueryColumn]
    rows: list[list[Any]] = Field(description=(
        "Row values in column order, the query's first rows. Integers and finite floats are numbers; "
        "NaN and infinities the strings \"NaN\", \"Infinity\", \"-Infinity\"; DECIMAL a string with "
        "its exact digits; times ISO 8601 text (TIMESTAMP WITH TIME ZONE in UTC, ending in Z); BLOB "
        "lowercase hex; LIST an array, STRUCT and MAP objects; other types DuckDB's text."))
    row_count: int = Field(description="Rows in `rows`.")
    truncated: bool = Field(description="True when the query had more rows than `rows` holds.")
    truncated_reason: Literal["max_rows", "max_bytes"] | None = Field(description=(
        "Why rows were left out: max_rows (the request's limit) or max_bytes (the 4 MiB the body "
        "may hold); null when truncated is false."))


class AuditFiles(BaseModel):
    """The sealed ledger's current Parquet files (for the local admin's CLI)."""

    object: Literal["audit_files"]
    files: list[str] = Field(description="The receipts' files.")
    model_call_files: list[str] = Field(default_factory=list, description="The model call records' files.")
    tenant_id: str | None


class AuditSnapshot(BaseModel):
    """A Parquet snapshot of the receipts, written beside the ledger for the local admin (additive)."""

    object: Literal["audit_snapshot"]
    path: str = Field(description="Absolute path of the Parquet file; the caller reads and removes it.")
    rows: int
    tenant_id: str | None = Field(description="The tenant whose receipts it holds; null for all.")


# --- webhooks -------------------------------------------------------------------------


class WebhookSecretRotated(Webhook):
    """The webhook after a rotation, with its new secret (shown this once)."""

    signing_secret: str = Field(description="whsec_...; shown in this response only.")
    previous_secret_expires_at: Timestamp | None = Field(
        description="Until then deliveries are signed with both secrets; null if the old one ended now.")


class WebhookAttempt(BaseModel):
    number: int
    at: Timestamp
    duration_ms: int
    status_code: int | None = Field(description="The receiver's HTTP status; null if none was received.")
    error: str | None = Field(description="timeout, connection error, SSRF refusal, ...; null on an answer.")


class WebhookDelivery(BaseModel):
    """One event delivered (or being delivered) to one endpoint, with every attempt."""

    id: str = Field(description="dlv_...")
    object: Literal["webhook_delivery"]
    webhook_id: str
    event_id: str = Field(description="evt_...; also the webhook-id header, the same on every retry.")
    event_type: str
    status: Literal["pending", "delivered", "failed"]
    attempt_count: int
    next_attempt_at: Timestamp | None
    last_status_code: int | None
    last_error: str | None
    created_at: Timestamp
    updated_at: Timestamp
    attempts: list[WebhookAttempt]


class WebhookDeliveryList(ListEnvelope):
    data: list[WebhookDelivery]
