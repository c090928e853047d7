"""Tool calls through Fibric's pooled connector session vs a bare MCP ClientSession.

Both sides call `orders.read` on the example order system
(examples/mcp/orders_server.py), over stdio and over streamable HTTP, in the
same run: sequential calls give p50/p99 latency, concurrent calls (one shared
session, many tasks) give calls per second. The bare side is the SDK's own
`ClientSession` with `call_tool`, nothing else; the Fibric side is
`ConnectorRuntime.call` (capability lookup, fail-closed checks, the `_meta`
idempotency key, result mapping, session borrowing). Ratios are Fibric/bare,
because these machines are shared and noisy. Also printed: what opening a
session costs, which is why there is one per connector.

Run: python bench/bench_connectors.py [--calls 1000] [--concurrency 16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from fibric import connectors
from fibric.specs import models

ROOT = Path(__file__).resolve().parent.parent
ORDERS_SERVER = ROOT / "examples" / "mcp" / "orders_server.py"
TENANT = "t_bench"
ARGS = {"order_id": "SO-10884"}
CAPABILITIES = {"orders.read": "orders.read", "orders.hold": "orders.hold", "orders.notify": "orders.notify"}

Call = Callable[[], Awaitable[Any]]


@asynccontextmanager
async def http_server(db: Path) -> AsyncIterator[str]:
    """The order system on streamable HTTP, on a port the OS picks."""
    env = {"PATH": os.environ["PATH"], "ORDERS_DB": str(db)}
    proc = subprocess.Popen(
        [sys.executable, str(ORDERS_SERVER), "--http", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        line = proc.stderr.readline() if proc.stderr else ""
        found = re.search(r"(http://\S+)", line)
        if found is None:
            raise RuntimeError(f"orders server did not start: {line!r}")
        yield found.group(1)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


@asynccontextmanager
async def bare_session(transport: str, db: Path, url: str) -> AsyncIterator[tuple[Call, float]]:
    """A bare SDK ClientSession; yields its call and how long opening it took (s)."""
    started = time.perf_counter()
    if transport == "stdio":
        params = StdioServerParameters(
            command=sys.executable, args=[str(ORDERS_SERVER)], env={"ORDERS_DB": str(db)}
        )
        streams = stdio_client(params)
    else:
        streams = streamable_http_client(url)
    async with streams as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        await session.list_tools()
        opened = time.perf_counter() - started

        count = 0

        async def call() -> Any:
            nonlocal count
            count += 1
            # The same request Fibric sends: the idempotency key in _meta.
            meta = {connectors.IDEMPOTENCY_META_KEY: f"bench-{count}"}
            result = await session.call_tool("orders.read", ARGS, meta=meta)  # type: ignore[arg-type]
            if result.is_error:
                raise RuntimeError(result.content)
            return result

        yield call, opened


@asynccontextmanager
async def fibric_session(transport: str, db: Path, url: str) -> AsyncIterator[tuple[Call, float]]:
    """Fibric's runtime with one connector; yields its call and the time to connected (s)."""
    if transport == "stdio":
        wire: dict[str, Any] = {
            "stdio": {"command": sys.executable, "args": [str(ORDERS_SERVER)], "env": {"ORDERS_DB": str(db)}}
        }
    else:
        wire = {"http": {"url": url}}
    spec = models.ConnectorSpec.model_validate({"transport": wire, "capabilities": CAPABILITIES})
    started = time.perf_counter()
    async with connectors.ConnectorRuntime(connectors.MemoryPinStore()) as runtime:
        await runtime.ensure(TENANT, "magento", spec)
        await runtime.wait_for(TENANT, "magento", lambda s: s.connection == "connected", 60)
        opened = time.perf_counter() - started
        count = 0

        async def call() -> Any:
            nonlocal count
            count += 1
            result = await runtime.call(TENANT, "orders.read", ARGS, f"bench-{count}")
            if result.is_error:
                raise RuntimeError(result.content)
            return result

        yield call, opened


async def sequential(call: Call, calls: int) -> list[float]:
    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - started)
    return latencies


async def concurrent(call: Call, calls: int, concurrency: int) -> float:
    """Calls per second with `concurrency` tasks sharing the one session."""
    per_task = calls // concurrency

    async def worker() -> None:
        for _ in range(per_task):
            await call()

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return per_task * concurrency / (time.perf_counter() - started)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(
    side: Callable[[str, Path, str], Any], transport: str, db: Path, url: str, calls: int, concurrency: int
) -> dict[str, float]:
    async with side(transport, db, url) as (call, opened):
        for _ in range(50):  # warm up: imports, caches, the server's SQLite pages
            await call()
        latencies = await sequential(call, calls)
        throughput = await concurrent(call, calls * 2, concurrency)
    return {
        "open_ms": opened * 1000,
        "p50_ms": pct(latencies, 0.50) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "seq_cps": len(latencies) / sum(latencies),
        "conc_cps": throughput,
    }


async def main_async(calls: int, concurrency: int, repeat: int) -> None:
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "orders.db"
        async with http_server(db) as url:
            for round_ in range(repeat):
                for transport in ("stdio", "http"):
                    # Alternate which side goes first, so drift on a shared machine evens out.
                    sides = [("bare", bare_session), ("fibric", fibric_session)]
                    for name, side in sides if round_ % 2 == 0 else reversed(sides):
                        numbers = await measure(side, transport, db, url, calls, concurrency)
                        results.setdefault((transport, name), []).append(numbers)

    print(
        f"orders.read, {calls} sequential + {calls * 2} concurrent calls (x{concurrency}), median of {repeat}"
    )
    print(f"{'transport':9} {'side':7} {'open ms':>8} {'p50 ms':>7} {'p99 ms':>7} ", end="")
    print(f"{'seq c/s':>8} {'conc c/s':>9}")
    medians: dict[tuple[str, str], dict[str, float]] = {}
    for (transport, name), runs in results.items():
        medians[(transport, name)] = m = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"{transport:9} {name:7} {m['open_ms']:8.0f} {m['p50_ms']:7.2f} {m['p99_ms']:7.2f} "
            f"{m['seq_cps']:8.0f} {m['conc_cps']:9.0f}"
        )
    print("\nratios fibric/bare (latency: lower is better; calls/s: higher is better)")
    for transport in ("stdio", "http"):
        f, b = medians[(transport, "fibric")], medians[(transport, "bare")]
        print(
            f"{transport:9} p50 x{f['p50_ms'] / b['p50_ms']:.2f}  p99 x{f['p99_ms'] / b['p99_ms']:.2f}  "
            f"seq c/s x{f['seq_cps'] / b['seq_cps']:.2f}  conc c/s x{f['conc_cps'] / b['conc_cps']:.2f}  "
            f"(opening a session: {b['open_ms']:.0f} ms = {b['open_ms'] / b['p50_ms']:.0f} calls)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    anyio.run(main_async, options.calls, options.concurrency, options.repeat)


if __name__ == "__main__":
    main()
