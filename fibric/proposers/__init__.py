"""The model side: turn what an operator sensed into proposed actions, never into effects.

`for_model(spec.model, ...)` gives a `Proposer`: the deterministic `rules`
proposer (CEL) or an OpenAI-compatible LLM route. See docs/operators.md.
"""

from fibric.proposers.base import ModelCall, ProposalError, ProposedAction, Proposer, Situation, Tool
from fibric.proposers.factory import RULES, answer_strictness, for_model
from fibric.proposers.keys import dedup, derive_idempotency_key
from fibric.proposers.llm import LlmProposer
from fibric.proposers.routes import Route
from fibric.proposers.routes import check as check_routes
from fibric.proposers.rules import RulesProposer
from fibric.proposers.validation import check_rules

__all__ = [
    "RULES",
    "LlmProposer",
    "ModelCall",
    "ProposalError",
    "ProposedAction",
    "Proposer",
    "Route",
    "RulesProposer",
    "Situation",
    "Tool",
    "answer_strictness",
    "check_routes",
    "check_rules",
    "dedup",
    "derive_idempotency_key",
    "for_model",
]
