"""Pick the proposer an operator's `model` names: "rules", or one of the tenant's LLM routes."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import httpx

from fibric import settings as settings_module
from fibric.proposers import base, llm, prompt, routes, rules

RULES = "rules"


def for_model(
    model: str,
    tenant_id: str,
    settings: settings_module.LlmSettings,
    *,
    environ: Mapping[str, str] | None = None,
    http: httpx.AsyncClient | None = None,
    on_call: Callable[[base.ModelCall], None] | None = None,
) -> base.Proposer:
    """The proposer for `model`; ProposalError when the route is unknown, not the tenant's, or keyless.

    `environ` is where a route's `api_key_env` is looked up (default: the process
    environment); `http` lets a caller share one connection pool across runs; `on_call` gets the
    record of every request an LLM route makes (base.ModelCall).
    """
    if model == RULES:
        return rules.RulesProposer()
    route = routes.resolve(model, tenant_id, settings)
    api_key = None
    if route.api_key_env is not None:
        api_key = (os.environ if environ is None else environ).get(route.api_key_env)
        if not api_key:
            raise base.ProposalError(
                f"LLM route '{model}': environment variable {route.api_key_env} is not set")
    return llm.LlmProposer(model, route, api_key=api_key, http=http, on_call=on_call)


def answer_strictness(
    situation: base.Situation, settings: settings_module.LlmSettings
) -> tuple[bool, str] | None:
    """Whether the operator's LLM route asks for its answer schema strictly, and if not why.

    None when that does not apply: the rules model, a route that does not ask
    strictly (`strict: false` or JSON mode), or a route a run fails on anyway
    with its own error.
    """
    model = situation.spec.model
    try:
        route = routes.resolve(model, situation.tenant_id, settings) if model != RULES else None
    except base.ProposalError:
        return None
    if route is None or not route.strict or route.mode == "json_object":
        return None
    answer = prompt.answer_schema(situation)
    if answer.strict:
        return True, f"route '{model}' asks for the answer schema strictly"
    return False, f"route '{model}' asks with strict: false, since " + "; ".join(answer.why_not_strict)
