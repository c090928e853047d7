"""Provider modes: how a route asks for the plan's shape, and answers shaped as each provider sends them.

`json_schema` (OpenAI, Azure OpenAI), `json_object` (JSON mode with the schema
in the prompt: servers without schema support) and `tools` (one forced call of
propose_plan: vLLM, Ollama and llama.cpp's server all answer function calls in
OpenAI's shape, with small differences kept here as recorded). Every request
goes to the loopback provider, which refuses a strict schema OpenAI would refuse.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import strict_rules
from fake_provider import Provider, Reply, completion, plan_call, plan_reply
from proposer_support import event, situation, spec

from fibric import proposers
from fibric.settings import LlmSettings

KEY = "sk-test-modes"
HOLD = {"capability": "orders.hold", "entity_key": "order:SO-1", "idempotency_key": None,
        "args": {"order_id": "SO-1", "reason": "carrier has not scanned"}}
PLAN = json.dumps({"actions": [HOLD]})


@pytest.fixture
def provider() -> Iterator[Provider]:
    with Provider() as running:
        yield running


def propose(provider: Provider, **route: Any) -> list[Any]:
    config = {"base_url": provider.base_url, "model": "m", "api_key_env": "K", "tenants": "*",
              "max_retries": 1, "retry_backoff_seconds": 0, **route}
    proposer = proposers.for_model("r", "t_acme", LlmSettings(routes={"r": config}), environ={"K": KEY})
    return asyncio.run(proposer.propose(situation(spec(model="r"), [event(carrier_scanned=False)])))


def test_json_object_mode_puts_the_schema_in_the_prompt(provider: Provider) -> None:
    provider.script = [Reply(body=completion(PLAN))]  # a JSON-mode answer: the plan as content

    [action] = propose(provider, mode="json_object")

    assert action.capability == "orders.hold"
    body = provider.received[0].body
    assert body["response_format"] == {"type": "json_object"}
    system = body["messages"][0]["content"]
    schema = json.loads(system.split("The execution_plan JSON Schema your answer must match:\n")[1])
    assert strict_rules.problems(schema) == []  # the same per-capability schema, here as guidance


@pytest.mark.parametrize(("server", "answer"), [
    ("openai", plan_call(PLAN)),
    ("vllm", plan_call(PLAN, call_id="chatcmpl-tool-8d1f2c")),
    ("ollama", plan_call(PLAN, finish_reason="stop", call_id="call_j3bxk2ve")),
    ("llama.cpp", plan_call(json.loads(PLAN), call_id="")),  # arguments sent as an object
])
def test_tools_mode_reads_the_plan_from_the_forced_call(provider: Provider, server: str,
                                                        answer: dict[str, Any]) -> None:
    provider.script = [Reply(body=answer)]

    [action] = propose(provider, mode="tools")

    assert action.capability == "orders.hold" and action.args == HOLD["args"]
    body = provider.received[0].body
    assert "response_format" not in body
    [tool] = body["tools"]
    assert tool["function"]["name"] == "propose_plan" and tool["function"]["strict"] is True
    assert strict_rules.problems(tool["function"]["parameters"]) == []
    assert body["tool_choice"] == {"type": "function", "function": {"name": "propose_plan"}}


def test_tools_mode_without_the_call_is_an_error_not_a_guess(provider: Provider) -> None:
    provider.script = [Reply(body=completion(PLAN))]  # the plan as text: not what was asked for

    with pytest.raises(proposers.ProposalError, match="r: the model did not call propose_plan"):
        propose(provider, mode="tools")


def test_an_answer_cut_off_at_the_token_limit_says_so(provider: Provider) -> None:
    cut = completion(PLAN[:30])
    cut["choices"][0]["finish_reason"] = "length"
    provider.script = [Reply(body=cut)]

    with pytest.raises(proposers.ProposalError, match=r"cut off at the token limit \(finish_reason length\)"):
        propose(provider, max_tokens=20)


def test_azure_openai_takes_the_key_as_api_key_and_the_api_version_in_the_query(provider: Provider) -> None:
    provider.script = [plan_reply([HOLD])]

    propose(provider, api_key_header="api-key", query={"api-version": "2024-10-21"})

    request = provider.received[0]
    assert request.path == "/v1/chat/completions?api-version=2024-10-21"
    assert request.headers["api-key"] == KEY and "authorization" not in request.headers


def test_429_waits_for_a_retry_after_given_as_an_http_date(provider: Provider) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    provider.script = [Reply(429, {"error": {"message": "rate limited"}}, {"Retry-After": later}),
                       plan_reply([HOLD])]

    started = time.monotonic()
    [action] = propose(provider)

    assert action.capability == "orders.hold"
    assert time.monotonic() - started >= 0.9  # waited until the date (to the second), not the zero backoff
    assert len(provider.received) == 2


def test_an_unknown_mode_names_the_field() -> None:
    settings = LlmSettings(routes={"r": {"base_url": "http://127.0.0.1:9/v1", "model": "m", "tenants": "*",
                                         "mode": "xml"}})
    with pytest.raises(proposers.ProposalError, match=r"routes\.r\.mode: Input should be 'json_schema'"):
        proposers.check_routes(settings)
