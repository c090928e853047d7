"""Every request a run makes to an LLM route is on the record: GET /v1/runs/{id} and the operator's usage.

A real OpenAI-compatible server on loopback answers the example operator's
runs: a valid plan, a malformed answer, a refusal, and no answer in time
(retried once). Each request is recorded with its answer, finish reason,
tokens, latency and outcome, linked to its run and plan; the operator's
`sensitive` event fields are masked in the record (the model still sees them).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runs_support import Live, apply_examples, apply_yaml, event, live, settle

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "proposers"))

from fake_provider import Provider, Reply, completion, plan_reply

from fibric import policies, store
from fibric.settings import LlmSettings
from fibric.store import receipt_store

OPERATOR = """
apiVersion: fibric.io/v1
kind: Operator
metadata: {name: ship-risk}
spec:
  capabilities: [orders.hold, orders.notify]
  policy: ship-risk-guard
  model: gpt
  subscribes: [order.updated]
  sensitive: [customer.email]
"""
DATA = {"status": "open", "carrier_scanned": False, "customer": {"email": "ann@example.com", "tier": "gold"}}
HOLD = {"capability": "orders.hold", "entity_key": "order:SO-1", "idempotency_key": None,
        "args": {"reason": "late"}}


@pytest.fixture
def provider() -> Iterator[Provider]:
    with Provider() as running:
        yield running


@pytest.fixture
def harness(state: store.StateStore, engine: policies.Engine, provider: Provider) -> Live:
    route = {"base_url": provider.base_url, "model": "gpt-test", "tenants": "*", "timeout_seconds": 1,
             "max_retries": 1, "retry_backoff_seconds": 0}
    return live(state, receipt_store.StoreLedger(state), engine, llm=LlmSettings(routes={"gpt": route}))


def run_once(client: Any, state: store.StateStore, provider: Provider, reply: list[Reply], n: int
             ) -> dict[str, Any]:
    provider.script = list(reply)
    event(client, f"evt-{n}", entity=f"order:SO-{n}", data=DATA)
    settle(state, timeout=30)
    latest = client.get("/v1/runs", params={"limit": 1}).json()["data"][0]
    body: dict[str, Any] = client.get(f"/v1/runs/{latest['id']}").json()
    return body


def test_each_request_to_a_route_is_recorded_with_its_run(
    harness: Live, state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant,
    provider: Provider,
) -> None:
    operator = apply_examples(state, tenant.id)
    apply_yaml(state, tenant.id, OPERATOR)
    with harness.client(state, tenant) as client:
        ok = run_once(client, state, provider, [plan_reply([HOLD])], 1)
        malformed = run_once(client, state, provider, [Reply(body=completion("Sure! Hold it."))], 2)
        refused = run_once(client, state, provider, [Reply(body=completion(None, refusal="I can't"))], 3)
        slow = run_once(client, state, provider, [Reply(body=completion("{}"), delay=3)] * 2, 4)
        usage = client.get(f"/v1/operators/{operator.id}").json()["model_usage"]
        listed = client.get("/v1/runs").json()["data"]
        another = harness.plain_client(state, other_tenant).get(f"/v1/runs/{ok['id']}")

    assert ok["status"] == "succeeded" and ok["plan_id"]
    [call] = ok["model_calls"]
    assert call["id"].startswith("mc_") and call["object"] == "model_call"
    assert (call["route"], call["model"], call["mode"], call["attempt"]) == (
        "gpt", "gpt-test", "json_schema", 1)
    assert (call["outcome"], call["error"], call["http_status"], call["finish_reason"]) == (
        "ok", None, 200, "stop")
    assert call["usage"] == {"prompt_tokens": 812, "completion_tokens": 64, "total_tokens": 876}
    assert call["plan_id"] == ok["plan_id"] and call["latency_ms"] > 0
    assert call["answer"]["choices"][0]["message"]["content"] == json.dumps({"actions": [HOLD]})
    recorded = json.loads(call["request"]["messages"][1]["content"])["events"][0]["data"]
    assert recorded["customer"] == {"email": "***masked***", "tier": "gold"}  # masked in the record ...
    sent = json.loads(provider.received[0].body["messages"][1]["content"])["events"][0]["data"]
    assert sent["customer"]["email"] == "ann@example.com"  # ... the model saw it

    assert malformed["status"] == "failed"
    [call] = malformed["model_calls"]
    assert call["outcome"] == "malformed" and "the answer is not JSON" in call["error"]
    assert call["plan_id"] is None
    [call] = refused["model_calls"]
    assert (call["outcome"], call["error"]) == ("refused", "llm:gpt: the model refused: I can't")
    assert [(c["attempt"], c["outcome"], c["answer"]) for c in slow["model_calls"]] == [
        (1, "timeout", None), (2, "timeout", None)]
    assert slow["error"] == "llm:gpt: no answer within 1s (gave up after 2 attempts)"

    assert usage == {"calls": 5, "failures": 4, "prompt_tokens": 812 * 3, "completion_tokens": 64 * 3,
                     "total_tokens": 876 * 3}
    assert all("model_calls" not in r for r in listed)  # the list stays light: one run shows its calls
    assert another.status_code == 404  # another tenant's run, and so its calls, cannot be read
