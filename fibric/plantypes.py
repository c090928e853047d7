"""Execution plans as a client sees them: frozen types parsed from the API's JSON where it arrives.

`fibric.client` returns these from its typed plan calls (`Client.plans`), so
the CLI and scripts read `plan.status is PlanStatus.PROPOSED` and
`result.outcome`, not dict keys. The shapes are the reference's
ExecutionPlan, its summary and its results, plus what docs/api.md adds;
fields a server has not sent yet (an older release) read as None or empty.
A value outside a closed set (an unknown status, say) is `Malformed`: the
client cannot say what such a plan means, so it does not guess.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fibric import timefmt


class Malformed(ValueError):
    """The JSON is not a plan this client understands (a missing field, a value outside its set)."""


class PlanStatus(enum.StrEnum):
    PROPOSED = "proposed"
    APPROVED = "approved"
    EXECUTED = "executed"
    BLOCKED = "blocked"
    REJECTED = "rejected"
    EXPIRED = "expired"


class Decision(enum.StrEnum):
    ALLOW = "ALLOW"
    ALERT = "ALERT"
    BLOCK = "BLOCK"
    DEDUP = "DEDUP"


class Outcome(enum.StrEnum):
    APPLIED = "applied"
    FAILED = "failed"
    REFUSED = "refused"
    DEDUPLICATED = "deduplicated"
    IN_DOUBT = "in_doubt"
    DECLINED = "declined"  # not approved: left out of only_actions, or the plan was rejected or expired


# Outcomes that mean the action did not do what was approved, or nobody knows whether it did.
UNSUCCESSFUL = frozenset({Outcome.FAILED, Outcome.REFUSED, Outcome.IN_DOUBT})


@dataclass(frozen=True)
class KeyRef:
    """The API key that decided a plan: its id, and its name when it was given one."""

    key_id: str
    key_name: str | None

    def __str__(self) -> str:
        return f"{self.key_name} ({self.key_id})" if self.key_name else self.key_id


@dataclass(frozen=True)
class PlanAction:
    """One proposed action, with the decision and rule the policy gave it when it was proposed."""

    capability: str
    entity_key: str
    idempotency_key: str
    args: dict[str, Any]  # the tool's arguments: free-form JSON by nature
    decision: Decision | None
    rule: str | None
    rationale: str | None


@dataclass(frozen=True)
class ActionResult:
    """What became of one action: the decision at disposal, the outcome, and its receipt."""

    idempotency_key: str
    decision: Decision | None
    outcome: Outcome
    receipt_id: str | None
    rule: str | None  # set when refused (and for declined: `declined`)
    flagged: bool  # a person must look: ALERT, or in_doubt after a crash

    @property
    def succeeded(self) -> bool:
        return self.outcome not in UNSUCCESSFUL


@dataclass(frozen=True)
class PlanSummary:
    """A plan as GET /v1/plans lists it."""

    id: str
    operator_id: str
    operator: str | None  # the operator's name
    status: PlanStatus
    action_count: int
    proposed_at: datetime
    expires_at: datetime | None

    def expired(self, now: datetime) -> bool:
        """Still proposed, but past its expiry: approving it will be refused."""
        return _past(self.status, self.expires_at, now)


@dataclass(frozen=True)
class Plan:
    """The whole plan, as GET /v1/plans/{id} and the approve and reject routes answer."""

    id: str
    operator_id: str
    operator: str | None
    run_id: str | None
    event_ids: tuple[str, ...]
    proposed_by: str
    status: PlanStatus
    actions: tuple[PlanAction, ...]
    policy_id: str | None
    digest: str | None  # sha256 over the actions as proposed: approve binds to it
    proposed_at: datetime
    expires_at: datetime | None
    approver: str | None  # the approver's free-text note
    decided_by: KeyRef | None
    decided_at: datetime | None
    reason: str | None  # why it was rejected, or that it expired
    results: tuple[ActionResult, ...]
    executed_at: datetime | None

    def expired(self, now: datetime) -> bool:
        """Still proposed, but past its expiry: approving it will be refused."""
        return _past(self.status, self.expires_at, now)

    def result_of(self, idempotency_key: str) -> ActionResult | None:
        return next((r for r in self.results if r.idempotency_key == idempotency_key), None)


def plan_summary(body: Mapping[str, Any]) -> PlanSummary:
    """A PlanSummary from one item of GET /v1/plans; Malformed if it is not one."""
    try:
        return PlanSummary(
            id=str(body["id"]),
            operator_id=str(body["operator_id"]),
            operator=_text(body.get("operator")),
            status=PlanStatus(body["status"]),
            action_count=int(body["action_count"]),
            proposed_at=timefmt.parse(body["proposed_at"]),
            expires_at=_when(body.get("expires_at")),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise Malformed(f"not a plan summary: {_why(e)}") from e


def plan(body: Mapping[str, Any]) -> Plan:
    """A Plan from an ExecutionPlan body; Malformed if it is not one."""
    try:
        decided_by = body.get("decided_by")
        return Plan(
            id=str(body["id"]),
            operator_id=str(body["operator_id"]),
            operator=_text(body.get("operator")),
            run_id=_text(body.get("run_id")),
            event_ids=tuple(str(e) for e in body.get("event_ids") or ()),
            proposed_by=str(body.get("proposed_by") or ""),
            status=PlanStatus(body["status"]),
            actions=tuple(_action(a) for a in body.get("actions") or ()),
            policy_id=_text(body.get("policy_id")),
            digest=_text(body.get("digest")),
            proposed_at=timefmt.parse(body["proposed_at"]),
            expires_at=_when(body.get("expires_at")),
            approver=_text(body.get("approver")),
            decided_by=KeyRef(str(decided_by["key_id"]), _text(decided_by.get("key_name")))
            if decided_by else None,
            decided_at=_when(body.get("decided_at")),
            reason=_text(body.get("reason")),
            results=tuple(_result(r) for r in body.get("results") or ()),
            executed_at=_when(body.get("executed_at")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise Malformed(f"not an execution plan: {_why(e)}") from e


def _action(body: Mapping[str, Any]) -> PlanAction:
    args = body.get("args") or {}
    if not isinstance(args, dict):
        raise TypeError(f"args of action {body.get('idempotency_key')!r} is not an object")
    return PlanAction(
        capability=str(body["capability"]),
        entity_key=str(body["entity_key"]),
        idempotency_key=str(body["idempotency_key"]),
        args=args,
        decision=Decision(body["decision"]) if body.get("decision") else None,
        rule=_text(body.get("rule")),
        rationale=_text(body.get("rationale")),
    )


def _result(body: Mapping[str, Any]) -> ActionResult:
    return ActionResult(
        idempotency_key=str(body["idempotency_key"]),
        decision=Decision(body["decision"]) if body.get("decision") else None,
        outcome=Outcome(body["outcome"]),
        receipt_id=_text(body.get("receipt_id")),
        rule=_text(body.get("rule")),
        flagged=bool(body.get("flagged", False)),
    )


def _past(status: PlanStatus, expires_at: datetime | None, now: datetime) -> bool:
    return status is PlanStatus.PROPOSED and expires_at is not None and now >= expires_at


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _when(value: Any) -> datetime | None:
    return None if value is None else timefmt.parse(value)


def _why(error: Exception) -> str:
    return f"missing field {error}" if isinstance(error, KeyError) else str(error)
