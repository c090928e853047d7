"""Replicas: events to plans and actions disposed per second with 1, 2 and 3 replicas; takeover time.

Real `fibric serve` processes on one PostgreSQL store and Redis, sharing the
sealed ledger, with the example order system over streamable HTTP
(tests/replicas/replica_support.py), all on this machine, each replica count
in the same run:

1. events to plans: `--events` at-risk events (each its own order) POSTed
   round-robin across the replicas by `--clients` clients, until the
   ship-risk operator's plan for every one is stored;
2. actions: those plans approved round-robin across the replicas by the same
   clients (two actions each: decision, intent, tool call, receipt);
3. takeover: a replica armed to die after sending a tool request
   (FIBRIC_CRASHPOINT) is sent an approval; the time from its death to the
   plan executed by the surviving replica's recovery, over `--kills` kills,
   with executions' lease at `--lease` seconds (the default setting is 30).

Ratios are to one replica in the same run. Needs FIBRIC_TEST_POSTGRES_URL and
FIBRIC_TEST_REDIS_URL (`.ci/run` sets both).
Run: python bench/bench_replicas.py [--events 200] [--clients 8] [--kills 5] [--lease 5]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "replicas"))

import replica_support  # noqa: E402
from replica_support import Cluster, cluster_in, entity_actions  # noqa: E402

from fibric import store  # noqa: E402

AT_RISK = {"status": "open", "ship_by": "2026-06-15", "carrier_scanned": False}


def plans_stored(cluster: Cluster) -> list[str]:
    state = store.open_store(cluster.store_url)
    try:
        with state.backend.transaction(write=False) as cur:
            cur.execute("SELECT id FROM plans WHERE status = 'proposed' ORDER BY seq")
            return [str(r[0]) for r in cur.fetchall()]
    finally:
        state.close()


def spread(cluster: Cluster, urls: list[str], clients: int, work: list[object], send: object) -> float:
    """Seconds to do `work`, item n on replica n % len(urls), `clients` at a time."""
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, [urls[n % len(urls)] for n in range(len(work))], work))  # type: ignore[arg-type]
    return time.perf_counter() - started


def rates(tmp: Path, replicas: int, events: int, clients: int) -> tuple[float, float]:
    """(events to plans per second, actions per second) with `replicas` replicas."""
    orders = [f"SO-{n}" for n in range(events)]
    with cluster_in(tmp, orders) as cluster, contextlib.ExitStack() as opened:
        urls = [cluster.start("r0", specs=True)] + [cluster.start(f"r{n}") for n in range(1, replicas)]
        local = threading.local()

        def client(url: str) -> httpx.Client:
            """This client thread's keep-alive connection to `url`, as a real client keeps one."""
            mine = local.__dict__.setdefault("clients", {})
            if url not in mine:
                mine[url] = opened.enter_context(cluster.client(url))
            return mine[url]

        def ingest(url: str, order: object) -> None:
            answer = client(url).post("/v1/events", json={
                "type": "order.updated", "entity_key": f"order:{order}", "idempotency_key": f"{order}:v1",
                "occurred_at": "2026-06-14T08:58:00Z", "data": AT_RISK})
            assert answer.status_code in (200, 201, 202), answer.text

        started = time.perf_counter()
        spread(cluster, urls, clients, list(orders), ingest)
        while len(found := plans_stored(cluster)) < events:
            assert time.perf_counter() - started < 600, f"{len(found)} of {events} plans"
            time.sleep(0.05)
        to_plans = events / (time.perf_counter() - started)

        def approve(url: str, plan_id: object) -> None:
            answer = client(url).post(f"/v1/plans/{plan_id}/approve", json={"approver": "bench"})
            assert answer.status_code == 200, answer.text
            assert [r["outcome"] for r in answer.json()["results"]] == ["applied", "applied"], answer.text

        seconds = spread(cluster, urls, clients, list(found), approve)
        return to_plans, 2 * events / seconds


def takeovers(tmp: Path, kills: int, lease: float) -> list[float]:
    """Seconds from the death of the replica holding an execution to its plan executed by another."""
    times = []
    with cluster_in(tmp, [f"SO-{n}" for n in range(kills)], FIBRIC_EXECUTOR_LEASE_SECONDS=str(lease),
                    FIBRIC_EXECUTOR_RECOVERY_SECONDS="0.2") as cluster:
        survivor = cluster.start("survivor", specs=True)
        for n in range(kills):
            doomed = cluster.start(f"doomed{n}", FIBRIC_CRASHPOINT="after_request_sent@orders.hold")
            [plan_id] = cluster.propose([entity_actions(n)])
            with cluster.client(doomed) as c, contextlib.suppress(httpx.TransportError):
                c.post(f"/v1/plans/{plan_id}/approve", json={"approver": "bench"})  # it dies mid-request
            served, _ = cluster.replicas[-1]
            served.process.wait(timeout=60)
            died = time.perf_counter()
            with cluster.client(survivor) as c:
                while c.get(f"/v1/plans/{plan_id}").json()["status"] != "executed":
                    assert time.perf_counter() - died < 120, "no takeover"
                    time.sleep(0.05)
            times.append(time.perf_counter() - died)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--lease", type=float, default=5.0)
    parser.add_argument("--replicas", default="1,2,3")
    args = parser.parse_args()
    if not (replica_support.POSTGRES_URL and replica_support.REDIS_URL):
        raise SystemExit("set FIBRIC_TEST_POSTGRES_URL and FIBRIC_TEST_REDIS_URL")
    counts = [int(n) for n in args.replicas.split(",")]
    results: dict[int, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as folder:
        for n in counts:
            results[n] = rates(Path(folder) / f"r{n}", n, args.events, args.clients)
            (plans, actions), (base_plans, base_actions) = results[n], results[counts[0]]
            print(f"{n} replica(s): events to plans {plans:6.1f}/s ({plans / base_plans:.2f} of {counts[0]}),"
                  f" actions {actions:6.1f}/s ({actions / base_actions:.2f} of {counts[0]})", flush=True)
        if args.kills:
            taken = takeovers(Path(folder) / "kills", args.kills, args.lease)
            print(f"takeover after kill -9 of the holder, lease {args.lease:g} s: p50 "
                  f"{statistics.median(taken):.1f} s, max {max(taken):.1f} s over {len(taken)} kills")


if __name__ == "__main__":
    main()
