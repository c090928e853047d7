"""Replicas for the tests and bench/bench_replicas.py: `fibric serve` processes sharing one PostgreSQL.

Each replica has its own data dir and shares what replicas share
(docs/deploy.md): the PostgreSQL store (a schema of its own, dropped after),
FIBRIC_SECRET_KEY, Redis, the sealed ledger's catalog and data path, and the
connector catalog, whose `orders` entry is the example order system over
streamable HTTP: one server for every replica, its table of effects the
ground truth.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "executor"))
sys.path.insert(0, str(ROOT / "tests"))

import orders_system  # noqa: E402
from executor_support import example_actions, write_specs  # noqa: E402
from served_process import RUNNING, Served  # noqa: E402

from fibric import store  # noqa: E402
from fibric.store import plan_store, secretbox  # noqa: E402

POSTGRES_URL = os.environ.get("FIBRIC_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("FIBRIC_TEST_REDIS_URL")

KEY = re.compile(r"FIBRIC_KEY=(sk_live_[0-9a-f]+)")
LEASE = {"FIBRIC_EXECUTOR_LEASE_SECONDS": "2", "FIBRIC_EXECUTOR_RECOVERY_SECONDS": "0.2"}


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
            return [plan_store.propose(state, tenant.id, operator_id=operator.id, actions=actions,
                                       policy_id=None, proposed_by="rules").id for actions in plan_actions]
        finally:
            state.close()


@contextlib.contextmanager
def cluster_in(tmp_path: Path, orders: Sequence[str], **env: str) -> Iterator[Cluster]:
    """Everything replicas share, with these orders open in the order system; replicas started later."""
    import psycopg

    assert POSTGRES_URL is not None and REDIS_URL is not None
    schema, lake_schema = "fibric_test_" + secrets.token_hex(6), "fibric_lake_" + secrets.token_hex(6)
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE SCHEMA {lake_schema}")
    tmp_path.mkdir(parents=True, exist_ok=True)
    orders_system.seed_orders(tmp_path / "orders.db", orders)
    server = orders_system.HttpOrders(tmp_path / "orders.db")
    server.start()
    (tmp_path / "catalog.yaml").write_text(f"connectors:\n  orders:\n    http: {{url: \"{server.url}\"}}\n",
                                           encoding="utf-8")
    write_specs(tmp_path / "repo")
    sep = "&" if "?" in POSTGRES_URL else "?"
    shared = {
        **LEASE, "FIBRIC_EGRESS_ALLOW": "127.0.0.1",  # the tenant's webhook receiver is on loopback
        "FIBRIC_SECRET_KEY": secretbox.new_key(), "FIBRIC_REDIS_URL": REDIS_URL,
        "FIBRIC_LEDGER_CATALOG": "postgres:" + POSTGRES_URL, "FIBRIC_LEDGER_SCHEMA": lake_schema,
        "FIBRIC_LEDGER_DATA_PATH": str(tmp_path / "lake"),
        # the tests and benchmarks send faster than the reference's default budgets a minute allow
        "FIBRIC_RATE_LIMIT_WRITES": "100000", "FIBRIC_RATE_LIMIT_READS": "100000",
        "FIBRIC_RATE_LIMIT_EVENTS": "100000", **env,
    }
    setup = Cluster(tmp_path, f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}", shared, server.db)
    try:
        yield setup
    finally:
        for served, _ in setup.replicas:
            served.kill()
        for close in setup.closers:
            close()
        server.stop()
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
