"""What every proposer sees and returns, and the one error it raises.

A proposer turns a `Situation` (what was sensed for one run) into proposed
actions. It never acts: the plan it feeds is disposed of later by the executor
against policy. Anything wrong with a proposal is a `ProposalError`, which the
run records as its error; a proposer never returns a partial or guessed plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from fibric import errors
from fibric.specs import models


@dataclass(frozen=True)
class Tool:
    """An action capability the operator may propose, as its connector describes it."""

    capability: str
    description: str | None
    input_schema: dict[str, Any]  # the MCP tool's inputSchema ({} when unknown)
    side_effect: bool


@dataclass(frozen=True)
class Situation:
    """Everything a proposer may look at for one run."""

    tenant_id: str
    operator_id: str
    operator_name: str
    spec: models.OperatorSpec
    # event envelopes {id, type, entity_key, idempotency_key, occurred_at, data}, oldest first;
    # [] on a scheduled run
    events: list[dict[str, Any]]
    sensed: dict[str, Any]  # sense capability -> its tool result
    tools: list[Tool]  # the operator's spec.capabilities with their schemas


RATIONALE_MAX = 1000  # characters of an action's rationale kept on the plan


@dataclass(frozen=True)
class ProposedAction:
    capability: str
    entity_key: str
    args: dict[str, Any]
    idempotency_key: str  # always set: derived when the proposer gives none
    # Why the proposer wants it, for the approver: the rule that matched, or the model's words (bounded).
    rationale: str | None = None


@dataclass(frozen=True)
class ModelCall:
    """One request to an LLM route, as the run's records keep it (docs/operators.md#model-call-records).

    `request` is the body sent, with the operator's `sensitive` event fields
    masked; `answer` the provider's JSON body, if any. `outcome` is `ok` (a
    valid plan), `malformed` (an answer that is not one), `refused` (the model
    refused), `http_error`, `timeout` or `connection_error`.
    """

    route: str
    model: str
    mode: str
    attempt: int
    request: dict[str, Any]
    answer: Any
    http_status: int | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    latency_ms: float
    outcome: str
    error: str | None
    started_at: datetime


class ProposalError(errors.FibricError):
    """The proposer could not produce a valid plan; the run fails with this message, no action is proposed."""


class Proposer(Protocol):
    """The plug point chosen by an operator's `model`."""

    name: str  # recorded as the plan's proposed_by: "rules" or "llm:<route>"

    async def propose(self, situation: Situation) -> list[ProposedAction]: ...
