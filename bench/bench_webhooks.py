"""Webhook deliveries per second, and the latency a state change waits for its delivery.

Throughput: N events committed to the outbox, delivered by the dispatcher
(signing, SSRF-guarded connect, a recorded attempt per delivery) to a
receiver in its own process; compared with bare httpx POSTs of the same
bodies, at the same concurrency, to the same receiver in the same run.
Latency: events committed one at a time while the dispatcher runs; the time
from commit to arrival at the receiver, p50/p99, with the default poll
interval and with `wake()` after the commit.

Run: python bench/bench_webhooks.py [--events 2000] [--store postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
import _servers

from fibric import settings, specs, store, trust
from fibric.controller import applier, delivery, dispatch
from fibric.store import outbox, secretbox

HERE = Path(__file__).parent
CONCURRENCY = 16


def payload(i: int) -> dict[str, Any]:
    return {"id": f"pl_{i}", "object": "execution_plan", "status": "proposed",
            "actions": [{"capability": "orders.hold", "entity_key": f"order:{i}"}]}


def enqueue(state: store.StateStore, tenant: store.Tenant, count: int) -> float:
    """Commit `count` plan.proposed events (one transaction each); returns the last commit's time."""
    for i in range(count):
        with state.backend.transaction(write=True) as cur:
            outbox.enqueue(cur, reseller_id=tenant.reseller_id, tenant_id=tenant.id, type="plan.proposed",
                           payload=payload(i))
    return time.time()


def received(client: httpx.Client, url: str) -> list[tuple[str, float]]:
    return [tuple(x) for x in client.get(url + "/log").json()]  # type: ignore[misc]


async def fibric_throughput(state: store.StateStore, tenant: store.Tenant, config: settings.WebhookSettings,
                            box: secretbox.SecretBox, url: str, count: int) -> float:
    await asyncio.to_thread(enqueue, state, tenant, count)
    service = dispatch.Dispatcher(state, config, box, environ={})
    started = time.perf_counter()
    done = 0
    try:
        while done < count:
            done += await service.run_once()  # fan-outs and deliveries; count deliveries below
            with state.backend.transaction(write=False) as cur:
                cur.execute("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'delivered'")
                done = int(cur.fetchone()[0])
    finally:
        await service.aclose()
    return count / (time.perf_counter() - started)


async def bare_throughput(url: str, count: int) -> float:
    now = datetime.now(UTC)
    bodies = [json.dumps(outbox.OutboxEvent(i, f"evt_{i}", "rs", "t", "plan.proposed", payload(i), now)
                         .envelope(), separators=(",", ":")).encode() for i in range(count)]
    secret = "whsec_" + "A" * 43 + "="
    gate = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=CONCURRENCY)) as client:

        async def post(i: int) -> None:
            async with gate:
                headers = delivery.signed_headers(f"evt_{i}", bodies[i], [secret], int(time.time()))
                response = await client.post(url + "/hooks", content=bodies[i], headers=headers)
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(post(i) for i in range(count)))
        return count / (time.perf_counter() - started)


async def latency(state: store.StateStore, tenant: store.Tenant, config: settings.WebhookSettings,
                  box: secretbox.SecretBox, url: str, count: int, notify: bool) -> list[float]:
    service = dispatch.Dispatcher(state, config, box, environ={})
    committed: dict[str, float] = {}
    await service.start()
    try:
        for i in range(count):
            def commit(i: int = i) -> tuple[str, float]:
                with state.backend.transaction(write=True) as cur:
                    event_id = outbox.enqueue(cur, reseller_id=tenant.reseller_id, tenant_id=tenant.id,
                                              type="plan.proposed", payload={"id": f"pl_l{i}"})
                return event_id, time.time()

            event_id, at = await asyncio.to_thread(commit)
            committed[event_id] = at
            if notify:
                service.wake()
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)
    finally:
        await service.stop()
    with httpx.Client() as client:
        arrivals = dict(received(client, url))
    return [(arrivals[e] - at) * 1000 for e, at in committed.items() if e in arrivals]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.contextmanager
def scratch_schema(base_url: str) -> Iterator[str]:
    """A URL into a fresh PostgreSQL schema, dropped afterwards: the bench leaves nothing behind."""
    import psycopg

    schema = "fibric_bench_" + secrets.token_hex(6)
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        sep = "&" if "?" in base_url else "?"
        yield f"{base_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


async def main(events: int, store_url: str | None) -> None:
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        _, url = stack.enter_context(_servers.python_server(HERE / "webhook_receiver.py"))
        location = stack.enter_context(scratch_schema(store_url)) if store_url else str(Path(tmp) / "data")
        state = store.open_store(location)
        config = settings.WebhookSettings(allow_http_and_private=True, secret_key=secretbox.new_key(),
                                          concurrency=CONCURRENCY)
        box = secretbox.SecretBox(key=config.secret_key)
        tenant = state.create_tenant(f"bench-{int(time.time())}", "rs_bench")
        document = specs.build("Webhook", "bench", {"url": url + "/hooks", "events": ["plan.proposed"]})
        applier.apply(state, tenant.id, [specs.Loaded(document, specs.Source(file=""))],
                      options=applier.Options(trust.Boundary(webhook_egress=trust.ANYWHERE), box))
        with httpx.Client() as client:
            received(client, url)  # clear the start-up probe

            bare = await bare_throughput(url, events)
            fibric = await fibric_throughput(state, tenant, config, box, url, events)
            assert len(received(client, url)) == 2 * events, "every delivery must arrive"
        print(f"throughput ({events} deliveries, concurrency {CONCURRENCY}, {state.dialect}):")
        print(f"  bare httpx POSTs  {bare:8.0f}/s")
        print(f"  fibric dispatcher {fibric:8.0f}/s   ratio {fibric / bare:.2f}")
        for notify in (False, True):
            ms = await latency(state, tenant, config, box, url, 200, notify)
            how = "wake() after commit" if notify else (
                "LISTEN/NOTIFY" if state.dialect == "postgresql" else f"poll every {config.poll_seconds}s")
            print(f"latency commit -> received, {how}: p50 {pct(ms, 0.5):.1f} ms, p99 {pct(ms, 0.99):.1f} ms"
                  f" ({len(ms)} events)")
        state.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--store", default=None, help="postgresql:// URL (default: SQLite in a temp dir)")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.events, arguments.store))
