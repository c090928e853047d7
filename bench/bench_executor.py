"""Approvals end to end: actions disposed per second, against bare MCP calls of the same tools, same run.

Everything is real and on this machine, built by `fibric.system.build` as
`fibric serve` builds it: the app under uvicorn on loopback (its lifespan runs
the controller, which connects the example order system,
examples/mcp/orders_server.py, over stdio), the embedded Rego engine with the
example ship-risk policy, SQLite state holding the receipts of record
(synchronous=FULL where docs/receipts.md says), and the sealer sealing them
into the DuckLake ledger. Each plan is what the ship-risk operator proposes
(orders.hold, then orders.notify), on its own entity so that approvals in
flight do not collide on single-flight leases.

Measured in one run, (1) and (2) in alternating rounds at each width (each
ratio is the median of the rounds' ratios, so load that comes and goes on a
shared machine moves both sides of it):

1. bare: the MCP SDK's own ClientSession over stdio to a second copy of the
   order server, calling orders.hold and orders.notify with the same
   arguments, `width` calls in flight on one session. The baseline.
2. approve: POST /v1/plans/{id}/approve of two-action plans over loopback
   HTTP, one after another and with 8 and 32 approvals in flight; each
   action is an index read for DEDUP, a decision with counts from receipts,
   an intent, the tool call and the receipt with its events. Reported as
   actions/s, its ratio to bare calls at the same width, and the 8-in-flight
   rate against the sequential one.
3. The same 8-in-flight approvals with 100k and 1M receipts already in the
   tenant's ledger (of record and sealed), against the rate with none.
4. The sealing lag (a receipt's commit to its seal), p50 and p99, under the
   approvals of (2).

Run: python bench/bench_executor.py [--plans 300] [--rounds 3] [--sizes 0,100000,1000000]
Loopback only; no network.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import uvicorn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "executor"))
sys.path.insert(0, str(ROOT / "tests"))

import duckdb  # noqa: E402
import orders_system  # noqa: E402
from executor_support import FAST, ORDERS_SERVER, write_specs  # noqa: E402
from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402

from fibric import policies, settings, store, system  # noqa: E402
from fibric.api import protocol  # noqa: E402
from fibric.connectors import tools  # noqa: E402
from fibric.controller import applier, watch  # noqa: E402
from fibric.store import plan_store, receipt_store, sealed, stamps  # noqa: E402

WIDTHS = (1, 8, 32)
SETTLE_SECONDS = 1.0  # p99 sealing lag is under it (docs/receipts.md): the server is idle after it
LIFTED = settings.RateLimitSettings(reads_per_minute=10**7, writes_per_minute=10**7, events_per_minute=10**7)


def actions(n: int) -> list[dict[str, Any]]:
    """The ship-risk operator's two actions, on an entity of their own."""
    entity, key = f"order:bench-{n}", f"bench:{n}"
    return [
        {"capability": "orders.hold", "entity_key": entity, "idempotency_key": f"{key}:hold",
         "args": {"reason": "will miss ship-by date", "order_id": "SO-10884"}, "decision": "ALLOW"},
        {"capability": "orders.notify", "entity_key": entity, "idempotency_key": f"{key}:notify",
         "args": {"to": "owner", "order_id": "SO-10884"}, "decision": "ALERT"},
    ]


async def rate(count: int, width: int, make: Callable[[int], Awaitable[int]]) -> float:
    """Things per second doing `make(n)` for n in 0..count-1, `width` at a time (make says how many)."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)
    done = 0

    async def worker() -> None:
        nonlocal done
        while not queue.empty():
            got = await make(queue.get_nowait())  # not `done += await ...`: that reads `done` first
            done += got

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(width)))
    return done / (time.perf_counter() - started)


@contextlib.asynccontextmanager
async def bare_session(tmp: Path) -> AsyncIterator[ClientSession]:
    """The MCP SDK's client, nothing of Fibric's, on a second copy of the order server."""
    env = {"PATH": os.environ["PATH"], "ORDERS_DB": str(tmp / "bare-orders.db")}
    params = StdioServerParameters(command=sys.executable, args=[str(ORDERS_SERVER)], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def bare_rate(session: ClientSession, count: int, width: int, offset: int) -> float:
    async def two_calls(n: int) -> int:
        for action in actions(offset + n):
            meta = {tools.IDEMPOTENCY_META_KEY: action["idempotency_key"]}
            result = await session.call_tool(action["capability"], action["args"], meta=meta)  # type: ignore[arg-type]
            assert not result.is_error, result
        return 2

    return await rate(count, width, two_calls)


def prefill(data_dir: Path, tenant: store.Tenant, operator_id: str, count: int) -> None:
    """`count` receipts in the tenant's chain, of record and sealed, spread over 90 days, in bulk.

    Generated in DuckDB; their hashes are not a valid chain (nothing here
    verifies it), but each row is where a real one would be: its own seq and
    tenant_seq, the indexes the executor reads, and the lake's marks.
    """
    if count == 0:
        return
    state = store.open_store(data_dir)
    try:
        with state.backend.transaction(write=False) as cur:  # carry on after what is there
            cur.execute("SELECT COALESCE(MAX(seq), 0) FROM receipts")
            seq = int(cur.fetchone()[0])
            cur.execute("SELECT COALESCE(MAX(tenant_seq), 0) FROM receipt_heads WHERE tenant_id = ?",
                        (tenant.id,))
            tenant_seq = int(cur.fetchone()[0])
        gen = duckdb.connect()
        gen.execute(f"""
            CREATE TABLE r AS SELECT
                {seq} + i + 1 AS seq, {tenant_seq} + i + 1 AS tenant_seq,
                'rc_fill' || lpad(format('{{:x}}', {seq} + i), 13, '0') AS id,
                'rs_fibric' AS reseller_id, '{tenant.id}' AS tenant_id, '{operator_id}' AS operator_id,
                'ship-risk' AS operator, CASE WHEN i % 2 = 0 THEN 'orders.hold' ELSE 'orders.notify' END
                AS capability, 'order:fill-' || (i % 50000) AS entity_key, '{{"reason":"late"}}' AS args,
                'ev_' || i AS triggered_by_event, 'pl_fill' || (i // 2) AS plan_id, NULL AS run_id,
                'rules' AS proposed_by, CASE WHEN i % 10 < 8 THEN 'ALLOW' ELSE 'BLOCK' END AS decision,
                'orders.hold' AS rule, '{{"decision":"ALLOW"}}' AS policy, NULL AS policy_id,
                NULL AS policy_sha256, 'fill-{seq}-' || i AS idempotency_key,
                CASE WHEN i % 10 < 8 THEN 'applied' ELSE 'refused' END AS outcome, 'bench' AS approver,
                NULL AS detail,
                now()::TIMESTAMP - INTERVAL 90 DAY + to_microseconds((i * 7776000000000 // {count})::BIGINT)
                AS disposed_at,
                md5(i::VARCHAR) || md5((i + 1)::VARCHAR) AS prev_hash,
                md5((i + 1)::VARCHAR) || md5((i + 2)::VARCHAR) AS hash, NULL::VARCHAR AS decided_by,
                NULL::VARCHAR AS request_id, NULL::VARCHAR AS trace_id, NULL::VARCHAR AS decision_input
            FROM range({count}) t(i)""")
        marks = ", ".join("?" for _ in receipt_store.FIELDS)
        cur = gen.execute(f"SELECT {receipt_store.COLUMNS} FROM r ORDER BY seq")
        with state.backend.transaction(write=True) as tx:
            while batch := cur.fetchmany(50_000):
                tx.executemany(f"INSERT INTO receipts ({receipt_store.COLUMNS}) VALUES ({marks})",
                               [(*row[:23], stamps.stamp(row[23].replace(tzinfo=UTC)), *row[24:])
                                for row in batch])
            last = gen.execute("SELECT tenant_seq, hash FROM r ORDER BY seq DESC LIMIT 1").fetchone()
            tx.execute("INSERT INTO receipt_heads (tenant_id, tenant_seq, hash) VALUES (?, ?, ?) ON CONFLICT"
                       " (tenant_id) DO UPDATE SET tenant_seq = excluded.tenant_seq, hash = excluded.hash",
                       (tenant.id, last[0], last[1]))
    finally:
        state.close()
    lake = sealed.SealedLedger(data_dir)
    try:
        lake.marks()  # creates the lake
        staged = data_dir / "prefill.parquet"
        gen.execute(f"COPY (SELECT {receipt_store.COLUMNS} FROM r ORDER BY seq) "
                    f"TO '{staged}' (FORMAT parquet)")
        lake._cursor().execute(f"INSERT INTO {sealed.TABLE} SELECT * FROM read_parquet('{staged}')")
        staged.unlink()
    finally:
        lake.close()
        gen.close()


class Fibric:
    """A data dir with the example specs applied and the bench tenant's key."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.data = tmp / "data"
        self.orders_db = tmp / "orders.db"
        self.boundary = orders_system.orders_boundary(self.orders_db)
        state = store.open_store(self.data)
        try:
            self.tenant = state.create_tenant("bench", "rs_fibric")
            watch.apply_folder(state, self.tenant.id, write_specs(tmp / "repo"), "bench",
                               options=applier.Options(self.boundary))
            self.operator_id = state.get_object(self.tenant.id, "Operator", "ship-risk").id
            _, self.key = state.create_api_key(self.tenant.id, frozenset(store.SCOPES))
        finally:
            state.close()
        self.n = 0

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[tuple[system.System, str]]:
        config = settings.Settings(store=settings.StoreSettings(data_dir=self.data), rate_limits=LIFTED)
        engine = policies.open_engine("embedded", timeout=5.0)
        with system.build(config, boundary=self.boundary, engine=engine,
                          tuning=system.Tuning(connectors=FAST, route_events=False)) as running:
            server = uvicorn.Server(uvicorn.Config(
                running.app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                http=protocol.FibricH11Protocol, h11_max_incomplete_event_size=protocol.MAX_HEADER_BYTES))
            serving = asyncio.create_task(server.serve())
            try:
                while not server.started:
                    await asyncio.sleep(0.02)
                port = server.servers[0].sockets[0].getsockname()[1]
                await asyncio.wait_for(_connected(running, self.tenant.id), 60)
                yield running, f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True
                await serving
                engine.close()

    async def approvals(self, running: system.System, url: str, count: int, width: int) -> float:
        """Actions per second approving `count` two-action plans, `width` approvals in flight.

        The approvals are sent by a client in a process of its own, as a user's
        would be: in this one it would take the server's interpreter lock.
        """
        offset = self.n
        self.n += count
        proposed = [plan_store.propose(running.state, self.tenant.id, operator_id=self.operator_id,
                                       actions=actions(offset + n), policy_id=None, proposed_by="rules").id
                    for n in range(count)]  # proposed before the clock starts: approval is measured
        client = await asyncio.create_subprocess_exec(
            sys.executable, "-c", APPROVER, url, self.key, str(width),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        out, _ = await client.communicate(json.dumps(proposed).encode())
        if client.returncode != 0:
            raise SystemExit(f"the approving client failed (exit {client.returncode})")
        answer = json.loads(out)
        return float(answer["actions"]) / float(answer["seconds"])


# The approving client: POST /approve for each plan id on stdin, `width` at a time; prints
# {"actions", "seconds"}. It checks every answer: both actions applied.
APPROVER = """
import asyncio, json, sys, time
import httpx

async def main():
    url, key, width = sys.argv[1], sys.argv[2], int(sys.argv[3])
    plan_ids = json.loads(sys.stdin.read())
    queue = list(reversed(plan_ids))
    done = 0
    async with httpx.AsyncClient(base_url=url, timeout=120, headers={"Authorization": "Bearer " + key},
                                 limits=httpx.Limits(max_connections=width)) as client:
        async def worker():
            nonlocal done
            while queue:
                plan_id = queue.pop()
                response = await client.post(f"/v1/plans/{plan_id}/approve", json={"approver": "bench"})
                results = response.json().get("results")
                assert response.status_code == 200 and results, response.text
                assert [r["outcome"] for r in results] == ["applied", "applied"], results
                done += len(results)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(width)))
        print(json.dumps({"actions": done, "seconds": time.perf_counter() - started}))

asyncio.run(main())
"""


async def _connected(running: system.System, tenant_id: str) -> None:
    while True:
        try:
            running.runtime.resolve(tenant_id, "orders.hold")
            return
        except Exception:
            await asyncio.sleep(0.05)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def main_async(count: int, sizes: list[int], rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-executor-") as folder:
        tmp = Path(folder)
        fibric = Fibric(tmp)
        print(f"{count} two-action plans per width (orders.hold + orders.notify, the example order server "
              f"over stdio), in {rounds} rounds of bare calls then approvals; actions/s, medians")
        base: float | None = None
        filled = 0
        for size in sizes:
            prefill(fibric.data, fibric.tenant, fibric.operator_id, size - filled)
            filled = size
            async with fibric.serving() as (running, url):
                await fibric.approvals(running, url, 4, 1)  # warm-up: policy compiled, caches
                if base is None:
                    base = await compare(fibric, running, url, tmp, count, rounds)
                else:
                    rate_now = await fibric.approvals(running, url, count, 8)
                    print(f"  with {size:,} receipts already in the ledger: {rate_now:6.1f} actions/s "
                          f"at 8 in flight ({rate_now / base:.2f} of the rate with {sizes[0]:,})")


async def compare(fibric: Fibric, running: system.System, url: str, tmp: Path, count: int,
                  rounds: int) -> float:
    """Bare calls and approvals in alternating rounds at each width; the 8-in-flight approval rate.

    Each round measures the baseline right before the approvals it is compared
    with, so a neighbour's load that comes and goes on a shared machine moves
    both sides of a ratio, not one. The ratios reported are the medians of
    the rounds' ratios.
    """
    per_round = max(1, count // rounds)
    bare: dict[int, list[float]] = {w: [] for w in WIDTHS}
    approved: dict[int, list[float]] = {w: [] for w in WIDTHS}
    running.sealer.lags.clear()
    async with bare_session(tmp) as session:
        await bare_rate(session, 4, 1, 10**6)  # warm-up
        offset = 10**6 + 10
        for _ in range(rounds):
            for w in WIDTHS:
                await asyncio.sleep(SETTLE_SECONDS)  # sealing catches up: bare calls beside an idle server
                bare[w].append(await bare_rate(session, per_round, w, offset))
                offset += per_round
                approved[w].append(await fibric.approvals(running, url, per_round, w))
    rate = {w: statistics.median(approved[w]) for w in WIDTHS}
    print("  bare MCP SDK calls, one session: " + ", ".join(
        f"{w} in flight {statistics.median(bare[w]):.0f}/s" for w in WIDTHS))
    for w in WIDTHS:
        print(f"  approve, {w:>2} in flight: {rate[w]:6.1f} actions/s "
              f"({ratio(approved[w], bare[w]):.2f} of bare at {w}; {ratio(approved[w], bare[8]):.2f} "
              f"of bare at 8)")
    print(f"  8 in flight against one at a time: {ratio(approved[8], approved[1]):.2f}x")
    lags = list(running.sealer.lags)
    print(f"  sealing lag under these approvals: p50 {statistics.median(lags) * 1000:.0f} "
          f"ms, p99 {percentile(lags, 0.99) * 1000:.0f} ms ({len(lags)} receipts)")
    return rate[8]


def ratio(tops: list[float], bottoms: list[float]) -> float:
    """The median over rounds of one measurement against the other taken in the same round."""
    return statistics.median(top / bottom for top, bottom in zip(tops, bottoms, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=300)
    parser.add_argument("--sizes", default="0,100000,1000000",
                        help="receipts already in the ledger, in increasing order")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds of bare calls and approvals at each width")
    options = parser.parse_args()
    sizes = [int(s) for s in options.sizes.split(",")]
    asyncio.run(main_async(options.plans, sizes, max(1, options.rounds)))


if __name__ == "__main__":
    main()
