"""An LLM's rationale per action: asked for in every answer schema, read back bounded, never required.

The approver reads why the model proposed each action. The loopback provider
refuses a strict schema OpenAI would refuse, so a rationale read back in the
json_schema and tools modes means the schema that asked for it passed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import strict_rules
from fake_provider import Provider, Reply, completion, plan_call
from proposer_support import event, situation, spec

from fibric import proposers
from fibric.proposers import base, prompt
from fibric.settings import LlmSettings

WHY = "ev_1 says carrier_scanned is false and orders.read has ship_by 2026-06-15: the order will be late."
HOLD = {"capability": "orders.hold", "entity_key": "order:SO-1", "idempotency_key": None,
        "args": {"order_id": "SO-1", "reason": "carrier has not scanned"}}
MODES = ["json_schema", "json_object", "tools"]


@pytest.fixture
def provider() -> Iterator[Provider]:
    with Provider() as running:
        yield running


def answer(mode: str, actions: list[dict[str, Any]]) -> Reply:
    """The plan as `mode` answers it: message content, or the arguments of the propose_plan call."""
    plan = json.dumps({"actions": actions})
    return Reply(body=plan_call(plan) if mode == "tools" else completion(plan))


def propose(provider: Provider, mode: str, tools: list[proposers.Tool] | None = None) -> list[Any]:
    route = {"base_url": provider.base_url, "model": "gpt-test", "tenants": "*", "mode": mode,
             "max_retries": 0}
    proposer = proposers.for_model("r", "t_acme", LlmSettings(routes={"r": route}), environ={})
    run = situation(spec(model="r"), [event(carrier_scanned=False)],
                    sensed={"orders.read": {"id": "SO-1", "ship_by": "2026-06-15"}}, tools=tools)
    return asyncio.run(proposer.propose(run))


def sent_schema(body: dict[str, Any]) -> dict[str, Any]:
    """The answer schema a request carried, wherever its mode puts it."""
    if "tools" in body:
        return dict(body["tools"][0]["function"]["parameters"])
    if body["response_format"]["type"] == "json_schema":
        return dict(body["response_format"]["json_schema"]["schema"])
    marker = "The execution_plan JSON Schema your answer must match:\n"
    return dict(json.loads(body["messages"][0]["content"].split(marker)[1]))


@pytest.mark.parametrize("mode", MODES)
def test_the_models_rationale_reaches_the_proposed_action_in_each_mode(provider: Provider, mode: str) -> None:
    provider.script = [answer(mode, [{**HOLD, "rationale": WHY}])]

    [action] = propose(provider, mode)

    assert action.rationale == WHY
    body = provider.received[0].body
    system = body["messages"][0]["content"]
    assert f'Give each action a short "rationale" (a sentence or two, at most {base.RATIONALE_MAX}' in system
    schema = sent_schema(body)
    assert strict_rules.problems(schema) == []
    for branch in schema["properties"]["actions"]["items"]["anyOf"]:
        assert "rationale" in branch["required"]
        assert branch["properties"]["rationale"] == {
            "type": ["string", "null"], "description": f"{prompt.RATIONALE_DOC} At most 1000 characters."}


@pytest.mark.parametrize("mode", MODES)
def test_an_over_long_rationale_is_cut_not_refused(provider: Provider, mode: str) -> None:
    long = "The carrier has not scanned the parcel. " * 50  # 2,000 characters
    provider.script = [answer(mode, [{**HOLD, "rationale": long}])]

    [action] = propose(provider, mode)

    assert action.rationale == long[:base.RATIONALE_MAX] and len(action.rationale) == 1000
    assert action.args == HOLD["args"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("given", [{}, {"rationale": None}, {"rationale": "  "}],
                         ids=["absent", "null", "blank"])
def test_an_action_without_a_rationale_is_still_a_plan(provider: Provider, mode: str,
                                                       given: dict[str, Any]) -> None:
    provider.script = [answer(mode, [{**HOLD, **given}])]

    [action] = propose(provider, mode)

    assert (action.capability, action.rationale) == ("orders.hold", None)


def test_a_rationale_of_the_wrong_type_is_not_an_execution_plan(provider: Provider) -> None:
    provider.script = [answer("json_schema", [{**HOLD, "rationale": ["late"]}])]

    with pytest.raises(proposers.ProposalError,
                       match=r"not an ExecutionPlan: actions\[0\]\.rationale: \['late'\] is not of type"):
        propose(provider, "json_schema")


def test_the_loose_schema_asks_for_an_optional_bounded_rationale(provider: Provider) -> None:
    """A tool with no strict form: the route sends strict: false, and there the bound is a maxLength."""
    free_form = {"type": "object", "properties": {"labels": {"type": "object",
                                                             "additionalProperties": {"type": "string"}}}}
    tools = [proposers.Tool("orders.hold", None, free_form, side_effect=True),
             proposers.Tool("orders.notify", None, free_form, side_effect=True)]
    provider.script = [answer("json_schema", [{"capability": "orders.hold", "entity_key": "order:SO-1",
                                               "idempotency_key": None, "args": {}, "rationale": WHY}])]

    [action] = propose(provider, "json_schema", tools)

    assert action.rationale == WHY
    response_format = provider.received[0].body["response_format"]["json_schema"]
    assert response_format["strict"] is False
    item = response_format["schema"]["properties"]["actions"]["items"]
    assert "rationale" not in item["required"]
    assert item["properties"]["rationale"] == {"type": "string", "maxLength": base.RATIONALE_MAX,
                                               "description": prompt.RATIONALE_DOC}
