"""Events routed to stored plans per second (rules model), as a ratio to bare event ingest in the same run.

The whole path, in one process over a fresh store, the system built by
`fibric.system.build` as `fibric serve` builds it (every service running):
POST /v1/events through the real app (auth, rate limit, idempotency,
validation) stores the event and wakes the controller's event router, which routes it to the example
ship-risk operator (examples/specs, `model: rules`), runs it (CEL rules,
a dry-run Rego decision per action on the embedded engine), and stores the
plan with its plan.proposed outbox row. The clock stops when the last plan
is stored. Every event is about its own order, so each makes one run and
one plan (the worst case: nothing coalesces).

Baseline, measured in the same run because these machines are shared and
noisy: the same POSTs to the same system built with no event routing (ingest only).
Also reported: the rules proposer's own cost per event (`propose_now` on a
one-event situation), which bounds how much of a run is the model.

Requests go through httpx's ASGI transport on one event loop with
--concurrency requests in flight (no sockets: the figure is Fibric's, not
the kernel's). Each repeat measures ingest then plans, back to back; each
figure is the median of --repeat runs, and the ratio the median of the
repeats' own ratios, so load that comes and goes moves both sides of it.

Run: python bench/bench_runs.py [--events 600] [--concurrency 16] [--repeat 3] [--store postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fibric import policies, proposers, settings, specs, store, system  # noqa: E402
from fibric.controller import applier  # noqa: E402
from fibric.store import plan_store  # noqa: E402

EXAMPLES = ROOT / "examples" / "specs"
AT_RISK = {"carrier_scanned": False, "status": "open"}
LIFTED = settings.RateLimitSettings(reads_per_minute=10**9, writes_per_minute=10**9, events_per_minute=10**9)


def open_fresh(store_url: str | None, workdir: Path) -> store.StateStore:
    """A fresh store: SQLite in a new dir, or a new schema on the PostgreSQL server."""
    if store_url is None:
        return store.open_store(workdir / f"data-{secrets.token_hex(4)}")
    import psycopg

    schema = "fibric_bench_" + secrets.token_hex(4)
    with psycopg.connect(store_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in store_url else "?"
    return store.open_store(f"{store_url}{sep}options=-csearch_path%3D{schema}")


def drop(state: store.StateStore, store_url: str | None) -> None:
    state.close()
    if store_url is not None:  # drop the bench schemas this run made
        import psycopg

        with psycopg.connect(store_url, autocommit=True) as conn:
            for (name,) in conn.execute(
                    "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'fibric_bench_%'").fetchall():
                conn.execute(f"DROP SCHEMA {name} CASCADE")


def setup(state: store.StateStore) -> str:
    """The example policy and ship-risk operator in a tenant; an all-scopes key of it."""
    tenant = state.create_tenant("bench", "rs_fibric")
    files = [EXAMPLES / "policies.yaml", EXAMPLES / "operators.yaml"]
    loaded = [specs.resolve(i) for i in specs.load_paths(files)]
    applier.apply(state, tenant.id, loaded)
    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    return secret


async def post_events(app: Any, secret: str, count: int, concurrency: int, tag: str) -> None:
    """POST `count` events, one per order, `concurrency` in flight; every one must be stored (202)."""
    transport = httpx.ASGITransport(app=app)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench",
                                 headers={"Authorization": f"Bearer {secret}"}) as client:

        async def worker() -> None:
            while not queue.empty():
                n = queue.get_nowait()
                response = await client.post("/v1/events", json={
                    "type": "order.updated", "entity_key": f"order:{tag}-{n}",
                    "idempotency_key": f"{tag}-{n}", "data": AT_RISK})
                if response.status_code != 202:
                    raise RuntimeError(f"ingest failed: {response.status_code} {response.text}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def ingest_only(state: store.StateStore, engine: policies.Engine, workdir: Path, count: int,
                      concurrency: int) -> float:
    """Events stored per second by POST /v1/events, the system built with no event routing: the baseline."""
    secret = setup(state)
    with system.build(config(workdir), state=state, engine=engine,
                      tuning=system.Tuning(route_events=False)) as built:
        async with built.app.router.lifespan_context(built.app):
            started = time.perf_counter()
            await post_events(built.app, secret, count, concurrency, "ingest")
            return count / (time.perf_counter() - started)


async def to_plans(state: store.StateStore, engine: policies.Engine, workdir: Path, count: int,
                   concurrency: int) -> float:
    """Events turned into stored plans per second: POST, route, run, decide, store.

    The system is the one `fibric serve` builds (fibric/system.py), every
    service running: each preview reads recently applied actions from the
    receipts of record, as the executor's decision will.
    """
    secret = setup(state)
    tenant_id = state.get_tenant("bench").id
    with system.build(config(workdir), state=state, engine=engine,
                      tuning=system.Tuning(router_poll_seconds=1.0)) as built:
        async with built.app.router.lifespan_context(built.app):
            started = time.perf_counter()
            await post_events(built.app, secret, count, concurrency, "plans")
            while await asyncio.to_thread(_plan_count, state, tenant_id) < count:
                await asyncio.sleep(0.005)
            return count / (time.perf_counter() - started)


def config(workdir: Path) -> settings.Settings:
    """The installation's settings: defaults, a data dir of this run's, no rate limit in the way."""
    return settings.Settings(rate_limits=LIFTED,
                             store=settings.StoreSettings(data_dir=workdir / f"data-{secrets.token_hex(4)}"))


def _plan_count(state: store.StateStore, tenant_id: str) -> int:
    with state.backend.transaction(write=False) as cur:
        cur.execute("SELECT COUNT(*) FROM plans WHERE tenant_id = ?", (tenant_id,))
        return int(cur.fetchone()[0])


def proposer_cost_us(iterations: int) -> float:
    """The rules proposer's CPU per event (µs), on a one-event situation of the example operator."""
    [loaded] = specs.load_paths([EXAMPLES / "operators.yaml"])
    spec = specs.models.OperatorSpec.model_validate(loaded.document.spec_dict())
    proposer = proposers.RulesProposer()
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for n in range(iterations):
            situation = proposers.Situation(
                tenant_id="t_bench", operator_id="op_bench", operator_name="ship-risk", spec=spec,
                events=[{"id": f"ev_{n}", "type": "order.updated", "entity_key": f"order:{n}",
                         "idempotency_key": f"k{n}", "occurred_at": "2026-06-14T09:02:11Z", "data": AT_RISK}],
                sensed={}, tools=[])
            proposer.propose_now(situation)
        best = min(best, (time.perf_counter() - started) / iterations * 1e6)
    return best


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--store", default=None, help="PostgreSQL URL (default: SQLite in a temp dir)")
    args = parser.parse_args()
    engine = policies.open_engine("embedded", timeout=1.0)
    ingest_rates, plan_rates = [], []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        try:
            for _ in range(args.repeat):
                state = open_fresh(args.store, workdir)
                try:
                    ingest_rates.append(
                        await ingest_only(state, engine, workdir, args.events, args.concurrency))
                finally:
                    drop(state, args.store)
                state = open_fresh(args.store, workdir)
                try:
                    plan_rates.append(await to_plans(state, engine, workdir, args.events, args.concurrency))
                    assert len(plan_store.list_plans(state, state.get_tenant("bench").id)) == args.events
                finally:
                    drop(state, args.store)
        finally:
            engine.close()
    ingest, planned = statistics.median(ingest_rates), statistics.median(plan_rates)
    cost = proposer_cost_us(2000)
    backend = "postgresql" if args.store else "sqlite"
    print(f"store: {backend}; {args.events} events x {args.repeat} runs, {args.concurrency} in flight")
    print(f"baseline  POST /v1/events, ingest only      {ingest:8.0f} events/s")
    print(f"fibric    POST /v1/events -> stored plan    {planned:8.0f} events/s (one run and plan each)")
    ratios = [p / i for p, i in zip(plan_rates, ingest_rates, strict=True)]  # each repeat's own pair
    print(f"ratio     plans/ingest                      {statistics.median(ratios):8.2f} "
          "(median of each repeat's ratio)")
    print(f"rules proposer, one event per run           {cost:8.1f} µs/event "
          f"({cost / (1e6 / planned) * 100:.1f}% of the per-event path)")


if __name__ == "__main__":
    asyncio.run(main())
