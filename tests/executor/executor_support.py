"""A real Fibric for the executor tests: API, controller, connector runtime, example MCP server.

`Fibric` runs the app under uvicorn on loopback (its lifespan starts the
real controller, which connects the example order system over stdio and
runs executor recovery), with the real embedded Rego engine, the example
ship-risk policy, receipts of record in the state store and the sealed
DuckLake ledger in the data dir. Nothing is faked: effects are counted
in the order system's own SQLite file.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import live_server
import orders_system

from fibric import connectors, policies, settings, store, system, trust
from fibric.controller import applier, executor, watch
from fibric.store import event_store, plan_store, receipt_store

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
ORDERS_SERVER = EXAMPLES / "mcp" / "orders_server.py"
WAIT = 60.0
FAST = connectors.ConnectorSettings(call_timeout=15.0, connect_timeout=30.0, backoff_initial=0.05,
                                    backoff_max=0.5, backoff_jitter=0.0, ping_interval=5.0, ping_timeout=5.0)
EXAMPLE_EVENT = {
    "type": "order.updated",
    "entity_key": "order:SO-10884",
    "idempotency_key": "magento:SO-10884:v7",
    "occurred_at": "2026-06-14T08:58:00Z",
    "data": {"status": "open", "ship_by": "2026-06-15", "carrier_scanned": False},
}


def write_specs(folder: Path) -> Path:
    """examples/specs and examples/policies copied to `folder`, without the webhook.

    The connector names the catalog's `orders` entry, which the test's boundary
    points at its own orders database (orders_system.orders_boundary).
    """
    shutil.copytree(EXAMPLES / "specs", folder / "specs")
    shutil.copytree(EXAMPLES / "policies", folder / "policies")
    (folder / "specs" / "webhooks.yaml").unlink()  # tests stay on loopback: no deliveries to acme.example
    return folder / "specs"


def effects(db: Path, key: str | None = None) -> int:
    """External effects the order system really applied (optionally for one idempotency key)."""
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(db)) as conn:
        if key is None:
            return int(conn.execute("SELECT COUNT(*) FROM effects").fetchone()[0])
        return int(conn.execute("SELECT COUNT(*) FROM effects WHERE idempotency_key = ?",
                                (key,)).fetchone()[0])


def effect_keys(db: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return [str(r[0]) for r in conn.execute("SELECT idempotency_key FROM effects ORDER BY seq")]


def example_actions(
    entity: str = "order:SO-10884", prefix: str = "ship-risk:SO-10884"
) -> list[dict[str, Any]]:
    """What the ship-risk operator proposes for the reference's example event."""
    return [
        {"capability": "orders.hold", "entity_key": entity, "idempotency_key": f"{prefix}:hold",
         "args": {"reason": "will miss ship-by date"}, "decision": "ALLOW"},
        {"capability": "orders.notify", "entity_key": entity, "idempotency_key": f"{prefix}:notify",
         "args": {"to": "owner"}, "decision": "ALERT"},
    ]


@dataclass
class Fibric:
    url: str
    key: str
    state: store.StateStore
    tenant: store.Tenant
    ledger: receipt_store.StoreLedger  # the receipts of record
    executor: executor.Executor
    orders_db: Path
    system: system.System

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"},
                            timeout=60.0, **kwargs)

    def operator_id(self) -> str:
        return self.state.get_object(self.tenant.id, "Operator", "ship-risk").id

    def propose(self, actions: list[dict[str, Any]] | None = None, *, event_id: str | None = None,
                ) -> plan_store.Plan:
        """A plan of the ship-risk operator, as its run would propose it."""
        return plan_store.propose(self.state, self.tenant.id, operator_id=self.operator_id(),
                                  actions=actions if actions is not None else example_actions(),
                                  policy_id=None, proposed_by="rules", event_id=event_id)

    def ingest(self, **overrides: Any) -> event_store.Event:
        body = {**EXAMPLE_EVENT, **overrides}
        return event_store.ingest(self.state, reseller_id=self.tenant.reseller_id, tenant_id=self.tenant.id,
                                  type=body["type"], entity_key=body["entity_key"],
                                  idempotency_key=body["idempotency_key"], data=body["data"]).event


@contextlib.contextmanager
def running(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path, *, lease_seconds: float = 30.0,
    routing: bool = False, catalog: Mapping[str, Path] | None = None,
    boundary: trust.Boundary | None = None, services: Sequence[Any] = (),
    llm: settings.LlmSettings | None = None,
) -> Iterator[Fibric]:
    """The whole product on loopback, connected to the example order system; stops everything after.

    Built by `fibric.system.build`, as `fibric serve` builds it. With `routing`, events are routed to
    the operators subscribed to them, whose runs propose plans; else tests propose plans directly.
    `catalog` adds MCP server scripts to the installation's connector catalog, beside `orders`;
    `boundary` replaces the installation's boundary (its catalog must offer `orders`); `services`
    start before the system's own; `llm` are the installation's LLM routes.
    """
    orders_db = tmp_path / "orders.db"
    folder = write_specs(tmp_path / "repo")
    boundary = boundary or orders_system.orders_boundary(orders_db, catalog)
    watch.apply_folder(state, tenant.id, folder, "test", options=applier.Options(boundary))
    engine = policies.open_engine("embedded", timeout=5.0)
    config = settings.Settings(
        store=settings.StoreSettings(data_dir=tmp_path / "data"),
        rate_limits=settings.RateLimitSettings(reads_per_minute=100_000, writes_per_minute=100_000,
                                               events_per_minute=100_000),
        executor=settings.ExecutorSettings(lease_seconds=lease_seconds, recovery_interval_seconds=0.2),
        llm=llm or settings.LlmSettings())
    tuning = system.Tuning(connectors=FAST, router_poll_seconds=0.2, route_events=routing, services=services)
    built = system.build(config, boundary=boundary, engine=engine, state=state, tuning=tuning)
    _, key = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    try:
        with built as fibric_system, live_server.serving(fibric_system.app) as url:
            fibric = Fibric(url, key, state, tenant, fibric_system.ledger, fibric_system.executor, orders_db,
                            fibric_system)
            wait_connected(fibric)
            yield fibric
    finally:
        engine.close()


def wait_connected(fibric: Fibric, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    with fibric.client() as c:
        while True:
            body = c.get("/v1/connectors/cn_magento").json()
            if body.get("status") == "connected":
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"connector never connected: {json.dumps(body)}")
            time.sleep(0.05)
