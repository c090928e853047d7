"""The LLM proposer against a real OpenAI-compatible HTTP server on loopback with recorded answers.

Every malformed, off-schema, out-of-capability or bad-args answer is a ProposalError and no action;
provider failures are retried a bounded number of times.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fake_provider import Provider, Reply, completion, plan_reply
from proposer_support import HOLD_SCHEMA, event, situation, spec

from fibric import proposers
from fibric.settings import LlmSettings

KEY = "sk-test-very-secret"
PURPOSE = "Hold orders that will miss their ship-by date and tell the owner."
HOLD = {"capability": "orders.hold", "entity_key": "order:SO-1", "idempotency_key": None,
        "args": {"order_id": "SO-1", "reason": "carrier has not scanned"}}
NOTIFY = {"capability": "orders.notify", "entity_key": "order:SO-1",
          "idempotency_key": "ship-risk:SO-1:notify", "args": {"order_id": "SO-1", "to": "owner"}}


@pytest.fixture
def provider() -> Iterator[Provider]:
    with Provider() as running:
        yield running


def settings(base_url: str, **route: Any) -> LlmSettings:
    config = {"base_url": base_url, "model": "gpt-test", "api_key_env": "TEST_LLM_KEY", "tenants": ["t_acme"],
              "timeout_seconds": 5, "max_retries": 2, "retry_backoff_seconds": 0.01, **route}
    return LlmSettings(routes={"openai": config})


def propose(provider: Provider, events: list[dict[str, Any]] | None = None, **route: Any) -> list[Any]:
    proposer = proposers.for_model("openai", "t_acme", settings(provider.base_url, **route),
                                   environ={"TEST_LLM_KEY": KEY})
    operator_spec = spec(model="openai", purpose=PURPOSE)
    run = situation(operator_spec, [event(carrier_scanned=False)] if events is None else events,
                    sensed={"orders.read": {"id": "SO-1", "ship_by": "2026-06-15"}})
    return asyncio.run(proposer.propose(run))


def test_a_valid_plan_becomes_actions_with_keys(provider: Provider) -> None:
    provider.script = [plan_reply([HOLD, NOTIFY, NOTIFY])]

    actions = propose(provider)

    assert [(a.capability, a.entity_key, a.args) for a in actions] == [
        ("orders.hold", "order:SO-1", HOLD["args"]), ("orders.notify", "order:SO-1", NOTIFY["args"])]
    assert actions[0].idempotency_key == proposers.derive_idempotency_key(
        "op_1", "order:SO-1", "orders.hold", HOLD["args"])
    # the model's own key is kept, and its duplicate dropped
    assert actions[1].idempotency_key == "ship-risk:SO-1:notify"


def test_the_request_carries_purpose_events_sensed_and_tool_schemas(provider: Provider) -> None:
    provider.script = [plan_reply([])]

    assert propose(provider) == []

    [request] = provider.received
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    body = request.body
    assert body["model"] == "gpt-test"
    assert body["temperature"] == 0
    system, user = body["messages"]
    assert system["role"] == "system" and PURPOSE in system["content"] and '"guard"' in system["content"]
    assert user["role"] == "user"
    content = json.loads(user["content"])
    assert content["events"] == [event(carrier_scanned=False)]
    assert content["sensed"] == {"orders.read": {"id": "SO-1", "ship_by": "2026-06-15"}}
    assert content["capabilities"][0] == {"capability": "orders.hold", "description": "Put an order on hold.",
                                          "side_effect": True, "input_schema": HOLD_SCHEMA}
    assert [c["capability"] for c in content["capabilities"]] == ["orders.hold", "orders.notify"]
    response_format = body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "execution_plan"
    assert response_format["json_schema"]["strict"] is True
    schema = response_format["json_schema"]["schema"]
    assert schema["required"] == ["actions"] and schema["additionalProperties"] is False
    hold, notify = schema["properties"]["actions"]["items"]["anyOf"]  # one branch per capability
    assert hold["properties"]["capability"]["enum"] == ["orders.hold"]
    assert notify["properties"]["capability"]["enum"] == ["orders.notify"]
    assert hold["required"] == ["capability", "entity_key", "idempotency_key", "args", "rationale"]
    assert hold["properties"]["args"] == {  # the tool's schema, in strict form
        "type": "object", "additionalProperties": False, "required": ["order_id", "reason"],
        "properties": {"order_id": {"type": "string"},
                       "reason": {"type": "string", "description": "(minLength: 1)"}}}


def test_a_keyless_route_sends_no_authorization(provider: Provider) -> None:
    provider.script = [plan_reply([])]

    propose(provider, api_key_env=None)

    assert "authorization" not in provider.received[0].headers


@pytest.mark.parametrize(("reply", "message"), [
    (Reply(body=completion('{"actions": [{"capability": "orders.hold",')), "the answer is not JSON"),
    (Reply(body=completion("Sure! Here is your plan: hold the order.")), "the answer is not JSON"),
    (plan_reply([{**HOLD, "entity_key": None}]),
     "the answer is not an ExecutionPlan: actions[0].entity_key: None is not of type 'string'"),
    (plan_reply([{**HOLD, "run_now": True}]), "the answer is not an ExecutionPlan: actions[0]: Additional"),
    (Reply(body=completion(json.dumps({"plan": []}))),
     "not an ExecutionPlan: Additional properties are not allowed ('plan' was unexpected)"),
    (Reply(body=completion(json.dumps([HOLD]))), "the answer is not an ExecutionPlan"),
    (plan_reply([{**HOLD, "capability": "orders.delete"}]),
     "actions[0] proposes 'orders.delete', which operator 'ship-risk' does not have"),
    (plan_reply([NOTIFY, {**HOLD, "args": {"order_id": "SO-1"}}]),
     "actions[1].args: not valid for the input schema of 'orders.hold': 'reason' is a required property"),
    (plan_reply([{**NOTIFY, "args": {"order_id": "SO-1", "to": "everyone"}}]),
     "actions[0].args: not valid for the input schema of 'orders.notify': to: 'everyone' is not one of"),
    (Reply(body=completion(None, refusal="I can't help with that.")), "the model refused: I can't help"),
    (Reply(body=completion("")), "the model's message has no content"),
    (Reply(body={"object": "chat.completion", "choices": []}), "has no choices[0].message"),
    (Reply(body=b"<html>gateway</html>"), "the provider's answer is not JSON"),
])
def test_invalid_answers_are_errors_never_actions(provider: Provider, reply: Reply, message: str) -> None:
    provider.script = [reply]

    with pytest.raises(proposers.ProposalError) as caught:
        propose(provider)

    assert str(caught.value).startswith("llm:openai: ")
    assert message in str(caught.value)
    assert len(provider.received) == 1  # a bad answer is not retried: the model would be asked to guess again


def test_a_slow_provider_times_out_after_bounded_retries(provider: Provider) -> None:
    provider.script = [Reply(body=completion('{"actions": []}'), delay=30)] * 2

    with pytest.raises(proposers.ProposalError, match=r"no answer within 0.3s \(gave up after 2 attempts\)"):
        propose(provider, timeout_seconds=0.3, max_retries=1)

    assert len(provider.received) == 2


def test_a_5xx_is_retried_then_succeeds(provider: Provider) -> None:
    provider.script = [Reply(500, {"error": {"message": "upstream overloaded"}}), plan_reply([HOLD])]

    actions = propose(provider)

    assert [a.capability for a in actions] == ["orders.hold"]
    assert len(provider.received) == 2


def test_persistent_5xx_gives_up_with_the_provider_message(provider: Provider) -> None:
    provider.script = [Reply(503, {"error": {"message": "upstream overloaded"}})] * 3

    with pytest.raises(proposers.ProposalError) as caught:
        propose(provider, max_retries=2)

    assert str(caught.value) == "llm:openai: HTTP 503: upstream overloaded (gave up after 3 attempts)"
    assert len(provider.received) == 3


def test_429_waits_for_retry_after(provider: Provider) -> None:
    limited = Reply(429, {"error": {"message": "rate limited"}}, {"Retry-After": "1"})
    provider.script = [limited, plan_reply([HOLD])]

    started = time.monotonic()
    actions = propose(provider, retry_backoff_seconds=0)

    assert [a.capability for a in actions] == ["orders.hold"]
    assert time.monotonic() - started >= 0.9  # waited as told, not the zero backoff
    assert len(provider.received) == 2


def test_a_4xx_is_not_retried_and_the_key_is_not_echoed(provider: Provider) -> None:
    provider.script = [Reply(401, {"error": {"message": "Incorrect API key provided"}})]

    with pytest.raises(proposers.ProposalError) as caught:
        propose(provider)

    assert str(caught.value) == (
        "llm:openai: the provider refused the request, HTTP 401: Incorrect API key provided")
    assert KEY not in str(caught.value)
    assert len(provider.received) == 1


def test_connection_refused_is_retried_then_an_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    proposer = proposers.for_model(
        "openai", "t_acme", settings(f"http://127.0.0.1:{port}/v1", max_retries=1),
        environ={"TEST_LLM_KEY": KEY})

    with pytest.raises(proposers.ProposalError,
                       match=r"connection failed \(ConnectError\) \(gave up after 2"):
        asyncio.run(proposer.propose(situation(spec(model="openai"), [event()])))


def test_a_shared_client_is_used_when_given(provider: Provider) -> None:
    import httpx

    provider.script = [plan_reply([HOLD])]

    async def run() -> list[Any]:
        async with httpx.AsyncClient() as client:
            proposer = proposers.for_model("openai", "t_acme", settings(provider.base_url),
                                           environ={"TEST_LLM_KEY": KEY}, http=client)
            actions = await proposer.propose(situation(spec(model="openai"), [event()]))
            assert not client.is_closed  # the caller's pool stays open for the next run
            return actions

    assert [a.capability for a in asyncio.run(run())] == ["orders.hold"]
