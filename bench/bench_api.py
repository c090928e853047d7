"""Requests/s of GET /v1/operators and POST /v1/events through uvicorn, as ratios to a bare baseline.

Two servers run as real subprocesses on loopback under the same uvicorn
settings (one process, access log off, as a deployment behind a proxy runs):

- fibric: `create_app` over a fresh SQLite store, with everything a request
  goes through (request id, key lookup, rate limit, body cap, idempotency,
  validation, tenancy), its rate ceilings lifted so the benchmark measures
  throughput rather than the ceilings.
- bare: a FastAPI app over plain sqlite3 doing the same SQLite work per
  request, on a database made and seeded by Fibric's store (same schema,
  indexes, foreign keys, rows), and nothing else: read a page of operators,
  their policy's id and their latest runs, and return the same fields;
  insert an event (ON CONFLICT DO NOTHING, reading the original back on a
  repeat) and return its envelope.

The load generator is a small asyncio HTTP/1.1 keep-alive client in this
process (cheap, so the servers get the CPU), sending a fixed number of
requests over a fixed number of connections. Each figure is the median of
--repeat runs; ratios are fibric/bare measured in the same run, because these
machines are shared and noisy. `--serve` also measures `fibric serve` as
shipped (controller running, uvicorn access log on); `--worker-threads N`
also measures fibric with `server.worker_threads` set to N.

Run: python bench/bench_api.py [--requests 3000] [--concurrency 16] [--repeat 3] [--serve]
                               [--worker-threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

sys.path.insert(0, str(Path(__file__).parent))
import _servers

OPERATORS = 20


def serve_fibric(port: int, data_dir: Path) -> None:
    """Fibric's app over a fresh store; the key of an all-scopes tenant goes to DATA_DIR/key."""
    from fibric import settings, store
    from fibric.api import create_app, protocol

    state = store.open_store(data_dir)
    tenant = state.create_tenant("bench", "rs_fibric")
    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    lifted = settings.RateLimitSettings(reads_per_minute=10**9, writes_per_minute=10**9,
                                        events_per_minute=10**9)
    threads = os.environ.get("BENCH_WORKER_THREADS")
    server = settings.ServerSettings(worker_threads=int(threads) if threads else None)
    app = create_app(settings.Settings(store=settings.StoreSettings(data_dir=data_dir), server=server,
                                       rate_limits=lifted), state)
    (data_dir / "key").write_text(secret)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", http=protocol.FibricH11Protocol,
                h11_max_incomplete_event_size=protocol.MAX_HEADER_BYTES)


def serve_bare(port: int, data_dir: Path) -> None:
    """The baseline: Fibric's SQLite statements on Fibric's own schema, and nothing else.

    The database is made by Fibric's store (its migrations: the same tables,
    indexes and foreign keys) and seeded with the same specs, then served by a
    FastAPI app over plain sqlite3, so a request pays for exactly the SQLite
    work Fibric's does: the same three reads for a page of operators (the
    operators, their policy's id, their latest runs) and the same INSERT for an
    event (into a table with five indexes and a foreign key, reading the
    original back on a repeated key).
    """
    from fibric import specs, store
    from fibric.controller import applier

    state = store.open_store(data_dir)
    tenant = state.create_tenant("bench", "rs_fibric")
    applier.apply(state, tenant.id, [specs.Loaded(specs.validate_data(d), specs.Source(file="bench"))
                                     for d in documents()])
    state.close()
    local = threading.local()

    def db() -> sqlite3.Connection:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(data_dir / "state.db", isolation_level=None, check_same_thread=False,
                                   timeout=30)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            local.conn = conn
        return conn

    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/v1/operators")
    def operators() -> JSONResponse:
        rows = db().execute(
            "SELECT seq, id, name, spec, labels, generation, status, created_at, updated_at FROM objects"
            " WHERE tenant_id = ? AND kind = 'Operator' ORDER BY seq DESC LIMIT 21", (tenant.id,)).fetchall()
        page = rows[:20]
        policy = db().execute("SELECT id FROM objects WHERE tenant_id = ? AND kind = 'Policy' AND name = ?",
                              (tenant.id, "guard")).fetchone()
        ids = [row[1] for row in page]
        runs = db().execute(
            "SELECT operator_id, id, sensed, proposed, applied, started_at, finished_at, status, error"
            " FROM runs WHERE seq IN (SELECT MAX(seq) FROM runs WHERE tenant_id = ?"
            f" AND operator_id IN ({', '.join('?' * len(ids))}) GROUP BY operator_id)",
            (tenant.id, *ids)).fetchall()
        last = {run[0]: {"run_id": run[1], "sensed": run[2], "proposed": run[3], "applied": run[4],
                         "at": run[6] or run[5], "status": run[7], "error": run[8]} for run in runs}
        data = []
        for row in page:
            spec, status = json.loads(row[3]), json.loads(row[6])
            data.append({
                "id": row[1], "object": "operator", "name": row[2], "status": spec.get("lifecycle", "active"),
                "capabilities": spec["capabilities"], "policy_id": policy[0], "model": spec.get("model"),
                "schedule": spec.get("schedule"), "subscribes": spec.get("subscribes", []),
                "last_run": last.get(row[1]), "labels": json.loads(row[4]), "generation": row[5],
                "observed_generation": status.get("observed_generation"),
                "conditions": status.get("conditions", []), "created_at": row[7][:19] + "Z",
                "updated_at": row[8][:19] + "Z",
            })
        return JSONResponse({"object": "list", "data": data, "has_more": len(rows) > 20, "next_cursor": None})

    @app.post("/v1/events")
    async def events(request: Request) -> JSONResponse:
        body = await request.json()
        return await asyncio.to_thread(insert, body)

    def insert(body: dict[str, Any]) -> JSONResponse:
        conn = db()
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        occurred = body.get("occurred_at") or now
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(
            "INSERT INTO events (id, reseller_id, tenant_id, type, entity_key, idempotency_key, occurred_at,"
            " received_at, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING id, occurred_at, received_at",
            ("ev_" + os.urandom(8).hex(), tenant.reseller_id, tenant.id, body["type"], body["entity_key"],
             body["idempotency_key"], occurred, now, json.dumps(body["data"]))).fetchone()
        dedup = row is None
        if dedup:
            row = conn.execute("SELECT id, occurred_at, received_at FROM events"
                               " WHERE tenant_id = ? AND idempotency_key = ?",
                               (tenant.id, body["idempotency_key"])).fetchone()
        conn.execute("COMMIT")
        envelope = {"id": row[0], "object": "event", "reseller_id": tenant.reseller_id,
                    "tenant_id": tenant.id, "type": body["type"], "entity_key": body["entity_key"],
                    "idempotency_key": body["idempotency_key"], "occurred_at": row[1][:19] + "Z",
                    "received_at": row[2][:19] + "Z", "dedup": dedup}
        return JSONResponse(envelope, status_code=200 if dedup else 202)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


async def load(url: str, requests: list[bytes], concurrency: int, expect: set[int]) -> float:
    """Send `requests` (raw HTTP/1.1) over `concurrency` keep-alive connections; requests per second."""
    host, port = url.removeprefix("http://").split(":")
    queue = list(reversed(requests))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while queue:
                writer.write(queue.pop())
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                body = await reader.readexactly(length)
                if status not in expect:
                    raise SystemExit(f"unexpected status {status}: {body[:300]!r}")
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(requests) / (time.perf_counter() - start)


def raw(method: str, path: str, key: str, body: dict[str, Any] | None = None) -> bytes:
    payload = json.dumps(body).encode() if body is not None else b""
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
    return head.encode() + payload


def event(key: str) -> dict[str, Any]:
    return {"type": "order.updated", "entity_key": "order:SO-10884", "idempotency_key": key,
            "occurred_at": "2026-06-14T08:58:00Z",
            "data": {"status": "open", "ship_by": "2026-06-15", "carrier_scanned": False}}


def scenarios(key: str, count: int, run: int) -> dict[str, Callable[[], list[bytes]]]:
    return {
        "GET /v1/operators": lambda: [raw("GET", "/v1/operators", key)] * count,
        "POST /v1/events (new keys)": lambda: [raw("POST", "/v1/events", key, event(f"r{run}-{n}"))
                                               for n in range(count)],
        "POST /v1/events (repeated key)": lambda: [raw("POST", "/v1/events", key, event("repeated"))] * count,
    }


def measure(url: str, key: str, count: int, concurrency: int, run: int) -> dict[str, float]:
    rates = {}
    for name, build in scenarios(key, count, run).items():
        requests = build()
        warm = [raw("POST", "/v1/events", key, event(f"warm{run}-{n}")) for n in range(100)] \
            if "new keys" in name else requests[:100]
        asyncio.run(load(url, warm, concurrency, {200, 202}))
        rates[name] = asyncio.run(load(url, requests, concurrency, {200, 202}))
    return rates


def documents() -> list[dict[str, Any]]:
    """The specs both servers hold: OPERATORS operators bound to one policy."""
    policy = {"apiVersion": "fibric.io/v1", "kind": "Policy", "metadata": {"name": "guard"},
              "spec": {"rego": "package fibric.guard\n", "query": "data.fibric.guard.decision"}}
    return [policy] + [{"apiVersion": "fibric.io/v1", "kind": "Operator", "metadata": {"name": f"op-{n}"},
                        "spec": {"capabilities": ["orders.hold"], "policy": "guard"}}
                       for n in range(OPERATORS)]


def seed(url: str, key: str) -> None:
    """The fibric server's specs, through the API."""
    response = httpx.post(url + "/v1/apply", json={"documents": documents()},
                          headers={"Authorization": f"Bearer {key}"}, timeout=60)
    response.raise_for_status()


def drain(proc: subprocess.Popen[str]) -> None:
    """Read a server's output as it comes, so a full pipe never stalls it."""
    stream = proc.stdout
    if stream is not None:
        threading.Thread(target=lambda: [None for _ in stream], daemon=True).start()


def run_once(count: int, concurrency: int, run: int, serve: bool, threads: int | None
             ) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        with _servers.python_server(Path(__file__), "bare", str(Path(tmp) / "bare")) as (_, url):
            results["bare"] = measure(url, "unused", count, concurrency, run)
        variants = {"fibric": None} if threads is None else {"fibric": None, f"threads={threads}": threads}
        for name, variant in variants.items():
            os.environ.pop("BENCH_WORKER_THREADS", None)
            if variant is not None:
                os.environ["BENCH_WORKER_THREADS"] = str(variant)
            data = Path(tmp) / name
            with _servers.python_server(Path(__file__), "fibric", str(data)) as (_, url):
                key = (data / "key").read_text()
                seed(url, key)
                results[name] = measure(url, key, count, concurrency, run)
        if serve:
            with _servers.fibric_serve(Path(tmp) / "serve") as (proc, url, key):
                drain(proc)
                seed(url, key)
                results["fibric serve"] = measure(url, key, count, concurrency, run)
    return results


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1].isdigit():  # a server, as _servers.python_server starts it
        {"bare": serve_bare, "fibric": serve_fibric}[sys.argv[2]](int(sys.argv[1]), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--serve", action="store_true", help="also measure `fibric serve` as shipped")
    parser.add_argument("--worker-threads", type=int, metavar="N",
                        help="also measure fibric with server.worker_threads = N")
    args = parser.parse_args()
    for name in ("READS", "WRITES", "EVENTS"):  # for `fibric serve`, which reads its settings from env
        os.environ[f"FIBRIC_RATE_LIMIT_{name}"] = str(10**9)
    runs = [run_once(args.requests, args.concurrency, n, args.serve, args.worker_threads)
            for n in range(args.repeat)]
    print(f"{args.requests} requests per scenario over {args.concurrency} connections, "
          f"median of {args.repeat} runs (requests/s; ratio = fibric / bare in the same run)")
    for name in runs[0]["bare"]:
        line = f"  {name:32} bare {statistics.median(r['bare'][name] for r in runs):7.0f}"
        for server in [s for s in runs[0] if s != "bare"]:
            rate = statistics.median(r[server][name] for r in runs)
            ratio = statistics.median(r[server][name] / r["bare"][name] for r in runs)
            line += f"   {server} {rate:7.0f} ratio {ratio:.2f}"
        print(line)


if __name__ == "__main__":
    main()
