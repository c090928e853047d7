"""Actions disposed per second, end to end, against bare tool calls of the same tool in the same run.

Everything is real and on this machine: the app under uvicorn on loopback
(its lifespan runs the controller, which connects the example order system,
examples/mcp/orders_server.py, over stdio), the embedded Rego engine with the
example ship-risk policy, SQLite state, DuckDB receipts. Each action is an
`orders.hold` with its own idempotency key (and its own entity, so the
concurrent runs do not collide on single-flight leases).

Measured, sequentially and with `--concurrency` clients at once:

- bare: `ConnectorRuntime.call` of orders.hold, nothing else (the baseline);
- executor: `Executor.execute` of a one-action plan (lease, dedup lookup,
  policy with counts from receipts, intent, call, receipt, outbox events,
  results), no HTTP;
- approve: POST /v1/plans/{id}/approve over loopback HTTP (auth, idempotency
  record, plan compare-and-set, then the executor).

Ratios are against bare calls/s, because these machines are shared and noisy.
Run: python bench/bench_executor.py [--actions 150] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "executor"))
sys.path.insert(0, str(ROOT / "tests"))

import orders_system  # noqa: E402
from executor_support import FAST, write_specs  # noqa: E402

from fibric import connectors, policies, settings, store  # noqa: E402
from fibric.api import create_app, protocol  # noqa: E402
from fibric.controller import apply, decide, executor, loop, reconcile, watch  # noqa: E402
from fibric.store import pins, plans, receipts  # noqa: E402


class Bench:
    def __init__(self, tmp: Path) -> None:
        self.state = store.open_store(tmp / "data")
        self.tenant = self.state.create_tenant("bench", "rs_fibric")
        boundary = orders_system.orders_boundary(tmp / "orders.db")
        watch.apply_folder(self.state, self.tenant.id, write_specs(tmp / "repo"), "bench",
                           options=apply.Options(boundary))
        self.operator_id = self.state.get_object(self.tenant.id, "Operator", "ship-risk").id
        self.ledger = receipts.Ledger(tmp / "receipts.duckdb")
        self.engine = policies.open_engine("embedded", timeout=5.0)
        config = settings.Settings(rate_limits=settings.RateLimitSettings(
            reads_per_minute=10**6, writes_per_minute=10**6, events_per_minute=10**6))
        cache = reconcile.CompileCache()
        self.runtime = connectors.ConnectorRuntime(
            pins.SQLPinStore(self.state), FAST,
            on_change=lambda tenant_id, name: self.controller.notify(tenant_id, "Connector", name))
        self.executor = executor.Executor(self.state, self.ledger, self.runtime,
                                          decide.Decider(self.state, self.engine, cache))
        self.controller = loop.Controller(self.state, config.controller, connectors=self.runtime,
                                          reconcilers=reconcile.reconcilers(self.engine, cache),
                                          boundary=boundary)
        self.app = create_app(config, self.state, self.controller, receipts=self.ledger,
                              executor=self.executor, boundary=boundary)
        _, self.key = self.state.create_api_key(self.tenant.id, frozenset(store.SCOPES))
        self.n = 0

    def action(self) -> dict[str, Any]:
        self.n += 1
        return {"capability": "orders.hold", "entity_key": f"order:bench-{self.n}",
                "idempotency_key": f"bench:{self.n}", "decision": "ALLOW",
                "args": {"reason": "bench", "order_id": "SO-10884"}}

    def plan(self) -> plans.Plan:
        return plans.propose(self.state, self.tenant.id, operator_id=self.operator_id,
                             actions=[self.action()], policy_id=None, proposed_by="rules")

    def close(self) -> None:
        self.ledger.close()
        self.engine.close()
        self.state.close()


async def rate(count: int, concurrency: int, make: Callable[[], Awaitable[Any]]) -> float:
    """Operations per second running `count` of `make()` with `concurrency` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await make()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return count / (time.perf_counter() - started)


async def main_async(actions: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp))
        server = uvicorn.Server(uvicorn.Config(bench.app, host="127.0.0.1", port=0, log_level="warning",
                                               lifespan="on", http=protocol.FibricH11Protocol,
                                               h11_max_incomplete_event_size=protocol.MAX_HEADER_BYTES))
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:
                await asyncio.sleep(0.02)
            port = server.servers[0].sockets[0].getsockname()[1]
            await asyncio.wait_for(_connected(bench), 60)
            headers = {"Authorization": f"Bearer {bench.key}"}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers,
                                         timeout=60, limits=httpx.Limits(max_connections=64)) as client:

                async def bare() -> None:
                    a = bench.action()
                    result = await bench.runtime.call(bench.tenant.id, "orders.hold", a["args"],
                                                      a["idempotency_key"], entity_key=a["entity_key"])
                    assert not result.is_error

                async def direct() -> None:
                    plan = await asyncio.to_thread(bench.plan)
                    approved = await asyncio.to_thread(plans.approve, bench.state, bench.tenant.id, plan.id,
                                                       approver="bench")
                    done = await bench.executor.execute(approved, only_actions=None)
                    assert done.results and done.results[0]["outcome"] == "applied", done.results

                async def approve() -> None:
                    plan = await asyncio.to_thread(bench.plan)
                    response = await client.post(f"/v1/plans/{plan.id}/approve", json={"approver": "bench"})
                    assert response.json()["results"][0]["outcome"] == "applied", response.text

                for make in (bare, direct, approve):  # warm-up
                    await make()
                print(f"{actions} actions (orders.hold, example MCP server over stdio), "
                      f"concurrency 1 and {concurrency}")
                for width in (1, concurrency):
                    base = await rate(actions, width, bare)
                    inner = await rate(actions, width, direct)
                    outer = await rate(actions, width, approve)
                    print(f"  concurrency {width:>2}: bare runtime.call {base:8.1f}/s | executor "
                          f"{inner:7.1f}/s ({inner / base:.2f}x) | approve over HTTP {outer:7.1f}/s "
                          f"({outer / base:.2f}x)")
        finally:
            server.should_exit = True
            await serving
            bench.close()


async def _connected(bench: Bench) -> None:
    while True:
        try:
            bench.runtime.resolve(bench.tenant.id, "orders.hold")
            return
        except Exception:
            await asyncio.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=150)
    parser.add_argument("--concurrency", type=int, default=8)
    options = parser.parse_args()
    asyncio.run(main_async(options.actions, options.concurrency))


if __name__ == "__main__":
    main()
