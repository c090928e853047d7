"""Server time of the approvers' pending-plans page, as a ratio to GET /v1/plans?status=proposed (same run).

One store holds --plans proposed plans (10,000 by default, two actions each,
as the ship-risk operator proposes them) of one tenant. One server, a real
subprocess on loopback under uvicorn as `fibric serve` configures it
(create_app, the page mounted at /ui/, rate ceilings lifted), answers both:

- page: `GET /ui/plans` with the key in the page's cookie: the first page of
  pending plans (20, newest first), rendered to HTML by Jinja2;
- api: `GET /v1/plans?status=proposed` with the same key as a bearer token:
  the same 20 plans as JSON.

Both go through the same middleware (the page's cookie becomes the bearer key
before admission), the same key check and the same store read; the page also
renders its template and lists the tenant's operators for its filter.

Server time is measured inside the server: a thin ASGI wrapper, outermost,
adds `Server-Timing: app;dur=<ms>` from the request's arrival to the start of
its response (both bodies are complete by then), so the loopback and the
client's parsing are not in it. Requests alternate page, api, page, ... over
one keep-alive connection each, so both see the same noise; --warmup of each
first. Reported: p50 and p99 of each, the ratios page/api, and the p50 round
trip the client saw. The script checks that both list the same plans.

Run: python bench/bench_approver_page.py [--plans 10000] [--requests 500] [--warmup 50]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

import _servers  # noqa: E402

from fibric import settings, store  # noqa: E402
from fibric.store import plan_store  # noqa: E402

LIFTED = settings.RateLimitSettings(reads_per_minute=10**9, writes_per_minute=10**9, events_per_minute=10**9)
_TIMING = re.compile(rb"server-timing: app;dur=([0-9.]+)", re.I)


def seed(data_dir: Path, count: int) -> str:
    """A store with `count` proposed plans of one tenant; the secret of an all-scopes key of it."""
    state = store.open_store(data_dir)
    try:
        tenant = state.create_tenant("bench", "rs_fibric")
        _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES), name="bench")
        for n in range(count):
            order, key = f"order:SO-{n:06d}", f"ship-risk:SO-{n:06d}"
            actions = [
                {"capability": "orders.hold", "entity_key": order, "idempotency_key": f"{key}:hold",
                 "args": {"reason": "will miss ship-by date"}, "decision": "ALLOW", "rule": "orders.hold",
                 "rationale": "rule 1 matched: carrier not scanned, ship-by tomorrow"},
                {"capability": "orders.notify", "entity_key": order, "idempotency_key": f"{key}:notify",
                 "args": {"to": "owner"}, "decision": "ALERT", "rule": "orders.notify",
                 "rationale": "rule 1 matched: tell the owner"},
            ]
            plan_store.propose(state, tenant.id, operator_id="op_bench0000000001", actions=actions,
                               policy_id=None, proposed_by="rules", operator_name="ship-risk")
    finally:
        state.close()
    return secret


def serve(port: int, data_dir: Path) -> None:
    """The server process: Fibric's app over the seeded store, with server time on every response."""
    import uvicorn
    from starlette.datastructures import MutableHeaders
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from fibric.api import create_app, protocol

    class ServerTiming:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            started = time.perf_counter()

            async def timed(message: Message) -> None:
                if message["type"] == "http.response.start":
                    elapsed = (time.perf_counter() - started) * 1000
                    MutableHeaders(scope=message).append("Server-Timing", f"app;dur={elapsed:.3f}")
                await send(message)

            await self.app(scope, receive, timed)

    state = store.open_store(data_dir)
    app = create_app(settings.Settings(store=settings.StoreSettings(data_dir=data_dir), rate_limits=LIFTED),
                     state)
    uvicorn.run(ServerTiming(app), host="127.0.0.1", port=port, log_level="warning",
                http=protocol.FibricH11Protocol, h11_max_incomplete_event_size=protocol.MAX_HEADER_BYTES)


def request(path: str, header: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{header}\r\n\r\n".encode()


async def measure(url: str, key: str, count: int, warmup: int) -> dict[str, Any]:
    """Alternate the two requests `warmup` + `count` times; server and round-trip times (ms) of each."""
    host, port = url.removeprefix("http://").split(":")
    asks = {"page": request("/ui/plans", f"Cookie: fibric_key={key}"),
            "api": request("/v1/plans?status=proposed", f"Authorization: Bearer {key}")}
    times: dict[str, dict[str, list[float]]] = {name: {"server": [], "trip": []} for name in asks}
    bodies: dict[str, bytes] = {}
    connections = {name: await asyncio.open_connection(host, int(port)) for name in asks}
    try:
        for n in range(warmup + count):
            for name, raw in asks.items():
                reader, writer = connections[name]
                started = time.perf_counter()
                writer.write(raw)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
                body = await reader.readexactly(length)
                trip = (time.perf_counter() - started) * 1000
                if not head.startswith(b"HTTP/1.1 200"):
                    raise SystemExit(f"{name}: {head[:200]!r} {body[:300]!r}")
                if n >= warmup:
                    times[name]["server"].append(float(_TIMING.search(head).group(1)))  # type: ignore[union-attr]
                    times[name]["trip"].append(trip)
                bodies[name] = body
    finally:
        for _, writer in connections.values():
            writer.close()
    page_ids = re.findall(rb'href="/ui/plans/(pl_[0-9a-f]+)"', bodies["page"])
    api_ids = re.findall(rb'"id":"(pl_[0-9a-f]+)"', bodies["api"])
    if page_ids != api_ids or len(page_ids) != 20:
        raise SystemExit(f"the page and the API list different plans: {page_ids} vs {api_ids}")
    return times


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1].isdigit() and sys.argv[2] == "serve":  # _servers.python_server
        serve(int(sys.argv[1]), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plans", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=500, help="measured requests of each kind")
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    if args.plans < 21:
        parser.error("--plans must be at least 21 (a full first page, and a next one)")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        started = time.perf_counter()
        key = seed(data, args.plans)
        seeded = time.perf_counter() - started
        with _servers.python_server(Path(__file__), "serve", str(data)) as (_, url):
            times = asyncio.run(measure(url, key, args.requests, args.warmup))
    page, api = times["page"], times["api"]
    print(f"{args.plans} proposed plans (seeded in {seeded:.1f} s); first page of 20, newest first; "
          f"{args.requests} requests of each, alternating, after {args.warmup} of warm-up")
    print(f"  {'':28} {'p50 ms':>8} {'p99 ms':>8} {'round trip p50 ms':>18}")
    for name, label in (("page", "GET /ui/plans (HTML)"), ("api", "GET /v1/plans?status=proposed")):
        t = times[name]
        print(f"  {label:28} {percentile(t['server'], 50):8.2f} {percentile(t['server'], 99):8.2f}"
              f" {statistics.median(t['trip']):18.2f}")
    ratios = {p: percentile(page["server"], p) / percentile(api["server"], p) for p in (50, 99)}
    print(f"  ratio page/api (server time): p50 {ratios[50]:.2f}  p99 {ratios[99]:.2f}")


if __name__ == "__main__":
    main()
