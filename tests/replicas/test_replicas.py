"""Three `fibric serve` replicas on one PostgreSQL store and Redis: nothing lost, doubled or forked.

Real processes, each with its own data dir, sharing what replicas share
(docs/receipts.md#replicas): the PostgreSQL store, FIBRIC_SECRET_KEY, Redis
for rate limits, the sealed ledger's catalog (in PostgreSQL) and data path.
The tools are the example order system's, over streamable HTTP, one server
for all three, so its own table of effects is the ground truth. One replica's
clock runs 45 s fast (the test-only FIBRIC_TEST_CLOCK_OFFSET_SECONDS).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "executor"))
sys.path.insert(0, str(ROOT / "tests" / "bulkheads"))

import orders_system  # noqa: E402
from bulkhead_servers import Receiver  # noqa: E402
from executor_support import effect_keys, example_actions, write_specs  # noqa: E402
from served_process import RUNNING, Served  # noqa: E402

from fibric import store  # noqa: E402
from fibric.store import plans, secretbox  # noqa: E402

POSTGRES_URL = os.environ.get("FIBRIC_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("FIBRIC_TEST_REDIS_URL")
pytestmark = pytest.mark.skipif(not (POSTGRES_URL and REDIS_URL),
                                reason="replicas need FIBRIC_TEST_POSTGRES_URL and FIBRIC_TEST_REDIS_URL")
KEY = re.compile(r"FIBRIC_KEY=(sk_live_[0-9a-f]+)")
LEASE = {"FIBRIC_EXECUTOR_LEASE_SECONDS": "2", "FIBRIC_EXECUTOR_RECOVERY_SECONDS": "0.2"}
CAPPED = 200  # the order the cap test notifies about: the example policy allows 3 notifications an hour


@dataclass
class Cluster:
    tmp: Path
    store_url: str
    env: dict[str, str]
    orders_db: Path
    replicas: list[tuple[Served, str]] = field(default_factory=list)
    key: str = ""
    closers: list[Any] = field(default_factory=list)

    def start(self, name: str, *, specs: bool = False, **env: str) -> str:
        """Start one replica (its own data dir); its URL."""
        args = ["--data-dir", str(self.tmp / name), "--store", self.store_url,
                "--connector-catalog", str(self.tmp / "catalog.yaml")]
        if specs:
            args += ["--specs", str(self.tmp / "repo" / "specs")]
        served = Served(args, cwd=self.tmp, env={**self.env, **env})
        running = served.wait_for(RUNNING)
        assert running is not None, served.text
        self.replicas.append((served, running.group(1)))
        if specs:
            bootstrap = served.wait_for(KEY)
            assert bootstrap is not None, served.text
            self.key = bootstrap.group(1)
        with self.client(running.group(1)) as c:
            wait_connected(c)
        return running.group(1)

    def client(self, url: str) -> httpx.Client:
        return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60)

    def propose(self, plan_actions: list[list[dict[str, Any]]]) -> list[str]:
        """Plans of the example operator, stored as its runs store them; their ids."""
        state = store.open_store(self.store_url)
        try:
            tenant = state.get_tenant("default")
            operator = state.get_object(tenant.id, "Operator", "ship-risk")
            return [plans.propose(state, tenant.id, operator_id=operator.id, actions=actions, policy_id=None,
                                  proposed_by="rules").id for actions in plan_actions]
        finally:
            state.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    import psycopg

    assert POSTGRES_URL is not None and REDIS_URL is not None
    schema, lake_schema = "fibric_test_" + secrets.token_hex(6), "fibric_lake_" + secrets.token_hex(6)
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE SCHEMA {lake_schema}")
    orders_system.seed_orders(tmp_path / "orders.db",
                              [f"SO-{n}" for n in (*range(20), *range(100, 105), CAPPED)])
    orders = orders_system.HttpOrders(tmp_path / "orders.db")
    orders.start()
    (tmp_path / "catalog.yaml").write_text(f"connectors:\n  orders:\n    http: {{url: \"{orders.url}\"}}\n",
                                           encoding="utf-8")
    write_specs(tmp_path / "repo")
    sep = "&" if "?" in POSTGRES_URL else "?"
    env = {**LEASE, "FIBRIC_EGRESS_ALLOW": "127.0.0.1",  # the tenant's webhook receiver is on loopback
           "FIBRIC_SECRET_KEY": secretbox.new_key(), "FIBRIC_REDIS_URL": REDIS_URL,
           "FIBRIC_LEDGER_CATALOG": "postgres:" + POSTGRES_URL, "FIBRIC_LEDGER_SCHEMA": lake_schema,
           "FIBRIC_LEDGER_DATA_PATH": str(tmp_path / "lake"),
           # the test approves faster than the reference's default budget a minute allows
           "FIBRIC_RATE_LIMIT_WRITES": "100000", "FIBRIC_RATE_LIMIT_READS": "100000"}
    setup = Cluster(tmp_path, f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}", env, orders.db)
    try:
        yield setup
    finally:
        for served, _ in setup.replicas:
            served.kill()
        for close in setup.closers:
            close()
        orders.stop()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
            conn.execute(f"DROP SCHEMA {lake_schema} CASCADE")


def wait_connected(c: httpx.Client) -> None:
    deadline = time.monotonic() + 60
    while c.get("/v1/connectors/cn_magento").json().get("status") != "connected":
        assert time.monotonic() < deadline, "the order system never connected"
        time.sleep(0.05)


def entity_actions(n: int, key_of: int | None = None) -> list[dict[str, Any]]:
    """The example operator's two actions on order SO-n (idempotency keys of SO-`key_of`, if given)."""
    k = n if key_of is None else key_of
    return example_actions(entity=f"order:SO-{n}", prefix=f"ship-risk:SO-{k}")


def all_receipts(c: httpx.Client) -> list[dict[str, Any]]:
    found, cursor = [], None
    while True:
        page = c.get("/v1/receipts", params={"limit": 100, **({"cursor": cursor} if cursor else {})}).json()
        found += page["data"]
        cursor = page.get("next_cursor")
        if not page.get("has_more") or not cursor:
            return found


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
