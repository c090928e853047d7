"""What every proposer sees and returns, and the one error it raises.

A proposer turns a `Situation` (what was sensed for one run) into proposed
actions. It never acts: the plan it feeds is disposed of later by the executor
against policy. Anything wrong with a proposal is a `ProposalError`, which the
run records as its error; a proposer never returns a partial or guessed plan.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class ProposedAction:
    capability: str
    entity_key: str
    args: dict[str, Any]
    idempotency_key: str  # always set: derived when the proposer gives none


class ProposalError(errors.FibricError):
    """The proposer could not produce a valid plan; the run fails with this message, no action is proposed."""


class Proposer(Protocol):
    """The plug point chosen by an operator's `model`."""

    name: str  # recorded as the plan's proposed_by: "rules" or "llm:<route>"

    async def propose(self, situation: Situation) -> list[ProposedAction]: ...
