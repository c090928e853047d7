"""A run proposes a plan through an LLM route in each provider mode, against strict rules enforced.

The whole system (fibric.system.build), connected to the example order
server, with an LLM operator on the example capabilities: an event becomes a
plan proposed by `llm:gpt` whether the route asks with json_schema, JSON mode
or a forced function call. The loopback provider refuses a strict schema
OpenAI would refuse, so a plan here means the schema Fibric sent passed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fake_provider import Provider, Reply, completion, plan_call

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "executor"))

from executor_support import running

from fibric import store
from fibric.settings import LlmSettings

PLAN = {"actions": [{"capability": "orders.hold", "entity_key": "order:SO-10884", "idempotency_key": None,
                     "args": {"reason": "will miss ship-by date", "order_id": None}}]}
OPERATOR = {"apiVersion": "fibric.io/v1", "kind": "Operator", "metadata": {"name": "ship-risk-llm"},
            "spec": {"capabilities": ["orders.hold", "orders.notify"], "policy": "ship-risk-guard",
                     "model": "gpt", "subscribes": ["order.updated"]}}
ANSWERS = {"json_schema": completion(json.dumps(PLAN)), "json_object": completion(json.dumps(PLAN)),
           "tools": plan_call(json.dumps(PLAN))}


def wait_for(check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


@pytest.mark.parametrize("mode", list(ANSWERS))
def test_an_event_becomes_a_plan_in_each_provider_mode(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path, mode: str
) -> None:
    if state.dialect != "sqlite":
        pytest.skip("the provider modes do not depend on the store")
    with Provider() as provider:
        route = {"base_url": provider.base_url, "model": "gpt-test", "tenants": "*", "mode": mode}
        with running(state, tenant, tmp_path, routing=True, llm=LlmSettings(routes={"gpt": route})) as f, \
                f.client() as c:
            assert c.post("/v1/apply", json={"documents": [OPERATOR]}).status_code == 200
            if mode != "json_object":  # the tools are listed: the route asks strictly
                wait_for(lambda: any(x["type"] == "StructuredOutput" and x["status"] == "True" for x in
                                     c.get("/v1/operators/ship-risk-llm").json()["conditions"]),
                         "StructuredOutput True")
            provider.script = [Reply(body=ANSWERS[mode])]
            response = c.post("/v1/events", json={
                "type": "order.updated", "entity_key": "order:SO-10884", "idempotency_key": f"e-{mode}",
                "data": {"status": "open", "carrier_scanned": False}})
            assert response.status_code in (200, 202), response.text

            operator_id = c.get("/v1/operators/ship-risk-llm").json()["id"]
            listed = wait_for(lambda: c.get("/v1/plans", params={"operator_id": operator_id}).json()["data"],
                              "the LLM operator's plan")
            plan = c.get(f"/v1/plans/{listed[0]['id']}").json()
            assert plan["proposed_by"] == "llm:gpt"
            [action] = plan["actions"]
            assert (action["capability"], action["args"]) == (
                "orders.hold", {"reason": "will miss ship-by date", "order_id": None})
            [run] = [r for r in c.get("/v1/runs").json()["data"] if r["plan_id"] == plan["id"]]
            [call] = c.get(f"/v1/runs/{run['id']}").json()["model_calls"]
            assert (call["mode"], call["outcome"], call["plan_id"]) == (mode, "ok", plan["id"])
    [request] = provider.received
    if mode == "json_schema":
        assert request.body["response_format"]["json_schema"]["strict"] is True
    elif mode == "tools":
        assert request.body["tools"][0]["function"]["strict"] is True
    else:
        assert request.body["response_format"] == {"type": "json_object"}
