"""The LLM proposer's own cost per run, against the raw HTTP call to the same provider in the same run.

A loopback OpenAI-compatible server (tests/proposers/fake_provider.py) answers
every request with the same recorded plan. The operator is the example
ship-risk operator on an LLM route, with the tools of the example order
server, listed from it over MCP (examples/mcp/orders_server.py). Measured in
one run, one request at a time:

1. raw: httpx posting the same chat-completions body and reading its JSON;
   the baseline.
2. proposer: `LlmProposer.propose` as a run calls it: the per-capability
   strict answer schema built from the tools, the request, the answer parsed
   and validated (plan schema, each action's args against its tool's schema),
   then the call's record written to the state store (SQLite).
3. The parts of (2) alone, in µs: schema build, answer validation, record write.

Run: python bench/bench_model_calls.py [--runs 300] [--repeat 3]
Loopback only; no network. Each scenario's fastest of `--repeat` is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "proposers"))

from fake_provider import Provider, plan_reply  # noqa: E402
from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402

from fibric import proposers, store  # noqa: E402
from fibric.proposers import prompt  # noqa: E402
from fibric.settings import LlmSettings  # noqa: E402
from fibric.specs import models  # noqa: E402
from fibric.store import model_calls  # noqa: E402

ORDERS_SERVER = ROOT / "examples" / "mcp" / "orders_server.py"
PLAN = [{"capability": "orders.hold", "entity_key": "order:SO-10884", "idempotency_key": None,
         "args": {"order_id": "SO-10884", "reason": "will miss ship-by date"}},
        {"capability": "orders.notify", "entity_key": "order:SO-10884", "idempotency_key": None,
         "args": {"order_id": "SO-10884", "to": "owner"}}]


async def order_tools() -> list[proposers.Tool]:
    params = StdioServerParameters(command=sys.executable, args=[str(ORDERS_SERVER)],
                                   env={"PATH": "/usr/bin:/bin"})
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        listed = await session.list_tools()
    return [proposers.Tool(t.name, t.description, dict(t.input_schema), side_effect=True)
            for t in listed.tools if t.name in ("orders.hold", "orders.notify")]


def situation(tools: list[proposers.Tool]) -> proposers.Situation:
    spec = models.OperatorSpec.model_validate({
        "capabilities": ["orders.hold", "orders.notify"], "policy": "ship-risk-guard", "model": "gpt",
        "sensitive": ["customer.email"]})
    event = {"id": "ev_1", "type": "order.updated", "entity_key": "order:SO-10884", "idempotency_key": "k1",
             "occurred_at": "2026-06-14T09:02:11Z",
             "data": {"carrier_scanned": False, "status": "open", "customer": {"email": "ann@example.com"}}}
    return proposers.Situation(tenant_id="t_bench", operator_id="op_bench", operator_name="ship-risk",
                               spec=spec, events=[event], sensed={}, tools=tools)


async def per_run_ms(work: Callable[[], Awaitable[object]], runs: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(runs):
            await work()
        best = min(best, (time.perf_counter() - started) / runs * 1000)
    return best


def per_call_us(work: Callable[[], object], calls: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(calls):
            work()
        best = min(best, (time.perf_counter() - started) / calls * 1e6)
    return best


async def main_async(runs: int, repeat: int) -> None:
    tools = await order_tools()
    situ = situation(tools)
    with Provider() as provider, tempfile.TemporaryDirectory(prefix="bench-model-calls-") as folder:
        provider.script = [plan_reply(PLAN) for _ in range((runs + 1) * repeat * 2 + 10)]
        state = store.open_store(Path(folder) / "data")
        tenant = state.create_tenant("bench", "rs_fibric")
        route = {"base_url": provider.base_url, "model": "gpt-test", "tenants": "*"}
        settings = LlmSettings(routes={"gpt": route})
        calls: list[proposers.ModelCall] = []
        async with httpx.AsyncClient() as http:
            proposer = proposers.for_model("gpt", "t_bench", settings, environ={}, http=http,
                                           on_call=calls.append)
            body = proposer.request(situ)  # type: ignore[attr-defined]
            url = provider.base_url + "/chat/completions"

            async def raw() -> object:
                response = await http.post(url, json=body, headers={"Accept": "application/json"})
                return response.json()

            async def propose() -> object:
                calls.clear()
                actions = await proposer.propose(situ)
                model_calls.record(state, reseller_id=tenant.reseller_id, tenant_id=tenant.id, run_id="run_b",
                                   operator_id="op_bench", plan_id=None, calls=[vars(c) for c in calls])
                return actions

            await raw()
            await propose()  # warm: connections, validators
            raw_ms = await per_run_ms(raw, runs, repeat)
            proposer_ms = await per_run_ms(propose, runs, repeat)
            answer = json.dumps({"actions": PLAN})
            schema_us = per_call_us(lambda: prompt.answer_schema(situ), runs, repeat)
            validate_us = per_call_us(lambda: proposer._actions(situ, answer), runs, repeat)  # type: ignore[attr-defined]
            record = [vars(calls[-1])]
            record_us = per_call_us(lambda: model_calls.record(
                state, reseller_id=tenant.reseller_id, tenant_id=tenant.id, run_id="run_b",
                operator_id="op_bench", plan_id=None, calls=record), runs, repeat)
        state.close()
    print(f"LLM proposer per run, one request at a time ({runs} runs, best of {repeat}; tools of the "
          "example order server)")
    print(f"  raw HTTP call to the loopback provider: {raw_ms:7.2f} ms")
    print(f"  proposer (schema, request, validation, record): {proposer_ms:7.2f} ms "
          f"({proposer_ms / raw_ms:.2f}x raw; overhead {proposer_ms - raw_ms:.2f} ms)")
    print(f"  parts alone: answer schema {schema_us:.0f} µs, answer validation {validate_us:.0f} µs, "
          f"record write {record_us:.0f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    asyncio.run(main_async(options.runs, options.repeat))


if __name__ == "__main__":
    main()
