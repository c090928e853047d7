"""Three `fibric serve` replicas on one PostgreSQL store and Redis: nothing lost, doubled or forked.

Real processes (replica_support.py says what they share); the tools are the
example order system's, over streamable HTTP, one server for all three, so
its own table of effects is the ground truth. One replica's clock runs 45 s
fast (the test-only FIBRIC_TEST_CLOCK_OFFSET_SECONDS).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from replica_support import POSTGRES_URL, REDIS_URL, ROOT, Cluster, all_receipts, cluster_in, entity_actions

sys.path.insert(0, str(ROOT / "tests" / "bulkheads"))
sys.path.insert(0, str(ROOT / "tests" / "runs"))

from bulkhead_servers import Receiver
from executor_support import effect_keys
from runs_support import AT_RISK, all_runs, assert_single_flight, settle

from fibric import store
from fibric.store import event_store, plan_store

pytestmark = pytest.mark.skipif(not (POSTGRES_URL and REDIS_URL),
                                reason="replicas need FIBRIC_TEST_POSTGRES_URL and FIBRIC_TEST_REDIS_URL")
CAPPED = 200  # the order the cap test notifies about: the example policy allows 3 notifications an hour
FLOOD = 657  # events about one order, as tests/runs/test_runs_flood.py sends one replica


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with cluster_in(tmp_path, [f"SO-{n}" for n in (*range(20), *range(100, 105), CAPPED)]) as setup:
        yield setup


def test_three_replicas_one_effect_and_one_receipt_per_key_one_chain(cluster: Cluster) -> None:
    urls = [cluster.start("r1", specs=True), cluster.start("r2"),
            cluster.start("r3", FIBRIC_TEST_CLOCK_OFFSET_SECONDS="45")]
    receiver = Receiver()
    cluster.closers.append(receiver.close)
    with cluster.client(urls[0]) as c:
        answer = c.post("/v1/apply", json={"documents": [{
            "apiVersion": "fibric.io/v1", "kind": "Webhook", "metadata": {"name": "audit-feed"},
            "spec": {"url": receiver.url, "events": ["receipt.created"]}}]})
        assert answer.status_code == 200, answer.text
        [change] = answer.json()["changes"]
        receiver.secret = change["signing_secret"]
    def send(url: str, n: int) -> int:
        with cluster.client(url) as c:
            return c.post("/v1/events", json={
                "type": "order.updated", "entity_key": f"order:SO-{n}", "idempotency_key": f"evt-{n}",
                "data": {"status": "shipped", "ship_by": "2026-06-15", "carrier_scanned": True}}).status_code

    with ThreadPoolExecutor(12) as pool:  # each event sent to all three replicas at once
        assert set(pool.map(send, urls * 20, [n for n in range(20) for _ in urls])) <= {200, 201, 202}
    with cluster.client(urls[2]) as c:
        stored = c.get("/v1/events", params={"limit": 100}).json()["data"]
    assert sorted(e["idempotency_key"] for e in stored) == sorted(f"evt-{n}" for n in range(20))  # once each

    unique = cluster.propose([entity_actions(n) for n in range(20)])
    again = cluster.propose([entity_actions(100 + n, key_of=n) for n in range(5)])  # keys already used

    def approve(url: str, plan_id: str) -> int:
        with cluster.client(url) as c:
            return c.post(f"/v1/plans/{plan_id}/approve", json={"approver": "ops@acme.com"}).status_code

    with ThreadPoolExecutor(12) as pool:  # every plan approved on all three replicas at once
        codes = {p: list(pool.map(lambda u, p=p: approve(u, p), urls)) for p in unique}
    for plan_id, answers in codes.items():
        assert sorted(answers) == [200, 409, 409], (plan_id, answers)  # one execution; the rest single-flight
    for n, plan_id in enumerate(again):
        with cluster.client(urls[n % 3]) as c:
            disposed = c.post(f"/v1/plans/{plan_id}/approve", json={"approver": "ops@acme.com"}).json()
        outcomes = [r["outcome"] for r in disposed["results"]]
        assert outcomes == ["deduplicated", "deduplicated"], disposed["results"]

    capped = cluster.propose([[{"capability": "orders.notify", "entity_key": f"order:SO-{CAPPED}",
                                "idempotency_key": f"cap-{n}", "args": {"to": "owner"}, "decision": "ALERT"}]
                              for n in range(5)])
    for n, plan_id in enumerate(capped):  # one after another (one entity), each on the next replica
        with cluster.client(urls[n % 3]) as c:
            disposed = c.post(f"/v1/plans/{plan_id}/approve", json={"approver": "ops@acme.com"}).json()
        expected = "applied" if n < 3 else "refused"  # the cap counts every replica's receipts
        assert [r["outcome"] for r in disposed["results"]] == [expected], (n, disposed["results"])

    effects = Counter(effect_keys(cluster.orders_db))
    listed = []
    for url in urls:
        with cluster.client(url) as c:
            listed.append(sorted(r["id"] for r in all_receipts(c)))
    assert listed[0] == listed[1] == listed[2] and len(listed[0]) == 55  # one trail, read from any replica
    with cluster.client(urls[1]) as c:
        full = [c.get(f"/v1/receipts/{rid}").json() for rid in listed[0]]
    applied = Counter(r["idempotency_key"] for r in full if r["outcome"] == "applied")
    assert set(applied.values()) == {1} and len(applied) == 43
    assert effects == applied  # every effect has its applied receipt, and no key acted twice

    time.sleep(3)  # the elected replica seals within its lag (p99 under 2 s)
    verified = subprocess.run(
        [sys.executable, "-m", "fibric.cli", "audit", "verify", "--store", cluster.store_url],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("FIBRIC_")}, **cluster.env},
        cwd=cluster.tmp, capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr  # one chain, sealed byte for byte
    assert "55 receipts" in verified.stdout, verified.stdout
    assert "55 sealed, each as recorded" in verified.stdout, verified.stdout

    deadline = time.monotonic() + 60  # three dispatchers: every receipt.created delivered, once
    while set(receiver.receipts()) != set(listed[0]):
        assert time.monotonic() < deadline, (len(receiver.receipts()), receiver.rejected)
        time.sleep(0.2)
    assert not receiver.rejected
    assert Counter(d.webhook_id for d in receiver.deliveries).most_common(1)[0][1] == 1  # none twice


def test_the_replica_holding_an_execution_is_killed_and_another_finishes_it_once(cluster: Cluster) -> None:
    survivor = cluster.start("r1", specs=True)
    doomed = cluster.start("r2", FIBRIC_CRASHPOINT="after_request_sent@orders.hold")
    [plan_id] = cluster.propose([entity_actions(7)])
    with cluster.client(doomed) as c, pytest.raises(httpx.TransportError):
        c.post(f"/v1/plans/{plan_id}/approve", json={"approver": "ops@acme.com"})
    served, _ = cluster.replicas[1]
    assert served.process.wait(timeout=30) == -signal.SIGKILL, served.text

    with cluster.client(survivor) as c:  # its recovery takes the execution over once the lease expires
        deadline = time.monotonic() + 60
        while (plan := c.get(f"/v1/plans/{plan_id}").json())["status"] != "executed":
            assert time.monotonic() < deadline, plan
            time.sleep(0.1)
        receipts = [c.get(f"/v1/receipts/{r['receipt_id']}").json() for r in plan["results"]]
    effects = Counter(effect_keys(cluster.orders_db))
    assert set(effects.values()) == {1}
    by_key = {r["idempotency_key"]: r["outcome"] for r in receipts}
    assert by_key == {"ship-risk:SO-7:hold": "applied", "ship-risk:SO-7:notify": "applied"}
    assert set(effects) == set(by_key)
    with contextlib.suppress(Exception):
        served.kill()


def test_a_flood_for_one_order_sent_to_three_replicas_runs_one_at_a_time_and_makes_one_plan(
    cluster: Cluster,
) -> None:
    urls = [cluster.start("r1", specs=True), cluster.start("r2"),
            cluster.start("r3", FIBRIC_TEST_CLOCK_OFFSET_SECONDS="45")]

    def send(client: int) -> list[int]:
        with contextlib.ExitStack() as stack:
            opened = [stack.enter_context(cluster.client(url)) for url in urls]
            return [opened[n % 3].post("/v1/events", json={
                "type": "order.updated", "entity_key": "order:SO-10884", "idempotency_key": f"flood-{n}",
                "data": AT_RISK}).status_code for n in range(client, FLOOD, 8)]

    with ThreadPoolExecutor(8) as pool:
        statuses = [code for part in pool.map(send, range(8)) for code in part]
    assert statuses == [202] * FLOOD
    state = store.open_store(cluster.store_url)
    try:
        settle(state)
        tenant = state.get_tenant("default")
        done = all_runs(state, tenant.id)
        consumed = [e for run in done for e in run.event_ids]
        stored = {e.id for e in event_store.list_events(state, tenant.id, limit=FLOOD + 1)}
        assert len(stored) == FLOOD and sorted(consumed) == sorted(stored)  # each event in exactly one run
        assert all(run.status == "succeeded" for run in done)
        assert_single_flight(done)  # across replicas, on the database's clock (one replica runs 45 s fast)
        [plan] = plan_store.list_plans(state, tenant.id)
        assert {run.plan_id for run in done if run.proposed} == {plan.id}
    finally:
        state.close()
