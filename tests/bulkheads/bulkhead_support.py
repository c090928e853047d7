"""Two tenants on one real `fibric serve`: A declares every slow dependency it can, B just works.

Everything runs for real on loopback: `fibric serve` as a subprocess (tests/
served_process.py), the example order system as B's connector from the
installation's catalog (stdio), a DNS server that never answers (the
installation's FIBRIC_DNS_NAMESERVERS, so a webhook host of A's never
resolves), TCP servers that accept and never answer, a real MCP server over
streamable HTTP whose tool calls never return (stalled_mcp_server.py), the
embedded Rego engine running a policy that runs past its budget on every
decision, and a webhook receiver for B that records and verifies what it
gets. Tenants and keys are made on the store before serve starts (what
`fibric admin` does); every spec is applied through the API with the
tenant's own key, as a tenant would.

A's faults, one letter each (the issue's list):

| fault | what A declares and does (noisy_tenant.py) |
|---|---|
| `a` dns | a webhook to https://<name>.hang.test/h, a name the DNS server never answers |
| `b` receiver | a webhook to a loopback TCP server that accepts and never answers |
| `c` connector | HTTP MCP connectors to a TCP server that never answers (connect hangs) and to |
| | a real MCP server whose calls hang; A approves plans that call the latter |
| `d` policy | a policy past its budget on every decision; A approves its operator's plans |
| `e` events | events at A's full rate limit (600/min), each a run of A's operator |

With `a` to `d`, A also sends a few events a second and approves what its
operators propose, so its webhooks, connectors and policy are busy all along;
`n` is that traffic alone, to healthy dependencies (a benchmark's reference).
B ingests events, its ship-risk operator proposes a plan per event, and B
approves them with several clients; `TenantB` measures and checks that work.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orders_system
from bulkhead_servers import Blackhole, Receiver, SilentDns, StalledMcp
from served_process import RUNNING, Served

from fibric import client as api_client
from fibric import store
from fibric.cli import local

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FAULT_NAMES = {"a": "unresolvable webhook host", "b": "webhook receiver that never answers",
               "c": "hanging HTTP MCP connector", "d": "policy over its budget every decision",
               "e": "events at the full rate limit"}
SHUTDOWN_SECONDS = 5.0  # FIBRIC_SHUTDOWN_SECONDS of the served process
WAIT = 120.0  # the longest any one step of B's may take before a test fails
B_APPROVER = "approver@tenant-b.example"




def effect_keys(db: Path) -> list[str]:
    """Idempotency keys of the effects the order system really applied, in order."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return [str(r[0]) for r in conn.execute("SELECT idempotency_key FROM effects ORDER BY seq")]


@dataclass
class Installation:
    """A running `fibric serve` with tenants A and B, and every server A's faults point at."""

    tmp: Path
    served: Served
    url: str
    key_a: str
    key_b: str
    tenant_a: str
    tenant_b: str
    orders_b: Path
    dns: SilentDns
    receiver_hole: Blackhole  # A's webhook receiver that never answers (fault b)
    connector_hole: Blackhole  # A's HTTP MCP connector that never answers (fault c)
    stalled: StalledMcp  # A's MCP server whose calls never answer (fault c)
    receiver: Receiver  # B's webhook receiver
    closers: list[Callable[[], None]] = field(default_factory=list)

    def backlog(self, tenant_id: str) -> int:
        """A tenant's events not yet consumed by a finished run (unrouted, queued or running)."""
        uri = f"file:{self.tmp / 'data' / 'state.db'}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as conn:
            unrouted = conn.execute("SELECT COUNT(*) FROM events WHERE tenant_id = ? AND routed_at IS NULL",
                                    (tenant_id,)).fetchone()[0]
            queued = conn.execute("SELECT COUNT(*) FROM run_queue WHERE tenant_id = ?",
                                  (tenant_id,)).fetchone()[0]
        return int(unrouted) + int(queued)

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds until the process was gone)."""
        started = time.monotonic()
        self.served.process.terminate()
        try:
            code = self.served.process.wait(timeout=SHUTDOWN_SECONDS + 30)
        except subprocess.TimeoutExpired:
            code = -999  # still running 30 s past its bound: the test fails on it
        return code, time.monotonic() - started


@contextlib.contextmanager
def installation(
    tmp: Path, orders: Sequence[str], env: dict[str, str] | None = None
) -> Iterator[Installation]:
    """Start everything; B's specs applied and its connector connected. Stops it all after."""
    closers: list[Callable[[], None]] = []
    served: Served | None = None
    try:
        dns = SilentDns()
        closers.append(dns.close)
        receiver_hole, connector_hole = Blackhole(), Blackhole()
        closers += [receiver_hole.close, connector_hole.close]
        stalled = StalledMcp()
        closers.append(stalled.close)
        receiver = Receiver()
        closers.append(receiver.close)

        orders_b, orders_a = tmp / "orders-b.db", tmp / "orders-a.db"
        orders_system.seed_orders(orders_b, orders)
        catalog = orders_system.orders_catalog(orders_b) + (
            "  orders-a:\n    stdio:\n"
            f"      command: {json.dumps(sys.executable)}\n"
            f"      args: [{json.dumps(str(orders_system.ORDERS_SERVER))}]\n"
            f"      env: {{ORDERS_DB: {json.dumps(str(orders_a))}}}\n")
        (tmp / "catalog.yaml").write_text(catalog, encoding="utf-8")

        data = tmp / "data"
        state = store.open_store(data)
        try:
            a = state.create_tenant("tenant-a", "rs_fibric")
            b = state.create_tenant("tenant-b", "rs_fibric")
            _, key_a = state.create_api_key(a.id, frozenset(store.SCOPES))
            _, key_b = state.create_api_key(b.id, frozenset(store.SCOPES))
        finally:
            state.close()

        environ = {
            "FIBRIC_EGRESS_ALLOW": "127.0.0.1",  # tenants may reach the loopback test servers
            "FIBRIC_DNS_NAMESERVERS": f"127.0.0.1:{dns.port}",  # every name lookup goes to the silent one
            "FIBRIC_SHUTDOWN_SECONDS": str(SHUTDOWN_SECONDS),
            # B approves and polls more than the reference's defaults allow a minute; A keeps them.
            "FIBRIC_RATE_LIMIT_OVERRIDES": f"{b.id}:reads=100000,writes=100000,events=100000",
            # A's slow policy runs to its budget on every decision: no circuit breaker spares it.
            "FIBRIC_POLICY_BREAKER_TIMEOUTS": "0",
            # B's decisions take a few ms of CPU, but on a 2-core machine beside A's policy burning a
            # core to its budget, one can wait past 100 ms for the CPU: give each decision 500 ms,
            # still far under A's (seconds of CPU per decision, so A's still always time out).
            "FIBRIC_POLICY_TIMEOUT_MS": "500",
            **(env or {}),
        }
        served = Served(["--data-dir", str(data), "--connector-catalog", str(tmp / "catalog.yaml")],
                        cwd=tmp, env=environ)
        closers.append(served.kill)
        running = served.wait_for(RUNNING)
        assert running is not None, served.text
        setup = Installation(tmp, served, running.group(1), key_a, key_b, a.id, b.id, orders_b, dns,
                             receiver_hole, connector_hole, stalled, receiver, closers)
        TenantB(setup).apply()
        yield setup
    finally:
        for close in reversed(closers):
            with contextlib.suppress(Exception):
                close()


# --- tenant B: the one that just works --------------------------------------------------------


def b_orders(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(n)]


@dataclass
class Batch:
    """One round of B's work: its orders, the plans its events led to, and what approving them did."""

    orders: list[str]
    ingest_seconds: float = 0.0
    propose_seconds: float = 0.0
    approve_seconds: float = 0.0
    plans: list[str] = field(default_factory=list)
    disposed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return len(self.orders) / self.ingest_seconds

    @property
    def actions_per_second(self) -> float:
        return sum(len(p["results"]) for p in self.disposed) / self.approve_seconds


class TenantB:
    """B's specs (examples/specs, its webhook on the loopback receiver) and its measured work."""

    def __init__(self, setup: Installation, clients: int = 8) -> None:
        self.setup = setup
        self.clients = clients

    def api(self) -> api_client.Client:
        return api_client.Client(self.setup.url, self.setup.key_b, timeout=60)

    def apply(self) -> None:
        repo = self.setup.tmp / "repo-b"
        if not repo.exists():
            shutil.copytree(EXAMPLES / "specs", repo / "specs")
            shutil.copytree(EXAMPLES / "policies", repo / "policies")
            (repo / "specs" / "webhooks.yaml").unlink()
        loaded, _ = local.load([str(repo / "specs")], offline=False)
        documents = [*local.wire(loaded), {
            "apiVersion": "fibric.io/v1", "kind": "Webhook", "metadata": {"name": "b-receipts"},
            "spec": {"url": self.setup.receiver.url, "events": ["receipt.created"]}}]
        with self.api() as api:
            result = api.apply(documents)
            [hook] = [c for c in result["changes"] if c["kind"] == "Webhook"]
            self.setup.receiver.secret = hook["signing_secret"]
            wait_connected(api, "magento")

    def ingest(self, batch: Batch, *, at_risk: bool = True) -> None:
        """POST one order.updated event per order, `clients` at a time.

        `at_risk` events (open, not scanned) make the ship-risk operator propose a plan;
        the others (shipped) are runs that propose nothing.
        """
        data = ({"status": "open", "ship_by": "2026-06-15", "carrier_scanned": False} if at_risk
                else {"status": "shipped", "ship_by": "2026-06-15", "carrier_scanned": True})

        def send(http: httpx.Client, order: str) -> None:
            answer = http.post("/v1/events", json={
                "type": "order.updated", "entity_key": f"order:{order}",
                "idempotency_key": f"b:{order}:v1", "occurred_at": "2026-06-14T08:58:00Z", "data": data})
            assert answer.status_code in (200, 201, 202), answer.text

        batch.ingest_seconds = self._fan_out(send, batch.orders)

    def wait_proposed(self, batch: Batch) -> None:
        """Until the ship-risk operator has proposed a plan for every order of the batch."""
        wanted = {f"order:{o}" for o in batch.orders}
        started = time.monotonic()
        found: dict[str, str] = {}
        seen: set[str] = set()
        with self.api() as api:
            operator = api.get_operator("ship-risk")["id"]
            while len(found) < len(wanted):
                for summary in api.list_plans(status="proposed", operator_id=operator):
                    if summary["id"] in seen:
                        continue
                    seen.add(summary["id"])
                    entity = api.get_plan(summary["id"])["actions"][0]["entity_key"]
                    if entity in wanted:
                        found[entity] = summary["id"]
                if len(found) < len(wanted):
                    assert time.monotonic() - started < WAIT, (
                        f"B's operator proposed {len(found)} of {len(wanted)} plans in {WAIT:g}s")
                    time.sleep(0.1)
        batch.propose_seconds = time.monotonic() - started
        batch.plans = sorted(found.values())

    def approve(self, batch: Batch) -> None:
        """Approve every plan of the batch, `clients` at a time; each answer is the disposed plan."""
        disposed: list[dict[str, Any]] = []

        def approve_one(http: httpx.Client, plan_id: str) -> None:
            answer = http.post(f"/v1/plans/{plan_id}/approve", json={"approver": B_APPROVER})
            assert answer.status_code == 200, answer.text
            disposed.append(answer.json())

        batch.approve_seconds = self._fan_out(approve_one, batch.plans)
        batch.disposed = disposed

    def run(self, batch: Batch) -> Batch:
        self.ingest(batch)
        self.wait_proposed(batch)
        self.approve(batch)
        return batch

    def _fan_out(self, work: Callable[[httpx.Client, str], None], items: Sequence[str]) -> float:
        """`work(client, item)` for every item on `clients` threads, one HTTP client each; seconds taken."""
        lock = threading.Lock()
        todo = list(items)

        def worker() -> None:
            with httpx.Client(base_url=self.setup.url, timeout=WAIT,
                              headers={"Authorization": f"Bearer {self.setup.key_b}"}) as http:
                while True:
                    with lock:
                        if not todo:
                            return
                        item = todo.pop(0)
                    work(http, item)

        started = time.monotonic()
        with ThreadPoolExecutor(self.clients) as pool:
            for future in [pool.submit(worker) for _ in range(self.clients)]:
                future.result()
        return time.monotonic() - started

    # --- what B's work must have done --------------------------------------------------------

    def check(self, batch: Batch) -> None:
        """What B's work must have done, when the batch is all B did on this server.

        Every plan executed and each of its actions applied, with the decision B's policy
        gives it (hold ALLOW, notify ALERT); the order system's effects are exactly those
        actions, once each; the receipts B lists say the same; and B's receiver got every
        receipt.created, signed, exactly once by webhook-id, within WAIT seconds.
        """
        expected = {"orders.hold": "ALLOW", "orders.notify": "ALERT"}
        wrong, results = [], {}
        for plan in batch.disposed:
            capability = {a["idempotency_key"]: a["capability"] for a in plan["actions"]}
            if plan["status"] != "executed" or len(plan["results"]) != 2:
                wrong.append(f"plan {plan['id']} is {plan['status']} with {len(plan['results'])} results")
            for result in plan["results"]:
                results[result["receipt_id"]] = (plan["id"], result)
                decision = expected[capability[result["idempotency_key"]]]
                if (result["decision"], result["outcome"]) != (decision, "applied"):
                    wrong.append(f"plan {plan['id']}: {capability[result['idempotency_key']]} "
                                 f"{result['decision']} {result['outcome']} ({result.get('rule', '')})")
        assert not wrong, f"{len(wrong)} of B's actions went wrong: {'; '.join(wrong[:4])}"
        assert len(batch.disposed) == len(batch.plans) and len(results) == 2 * len(batch.plans)

        keys = sorted(r["idempotency_key"] for _, r in results.values())
        assert sorted(effect_keys(self.setup.orders_b)) == keys, "effects differ from B's applied actions"

        with self.api() as api:
            listed = {r["id"]: r for r in api.paginate("/v1/receipts")}
        assert set(listed) == set(results), "B's receipts differ from what its approvals answered"
        for receipt_id, (_, result) in results.items():
            summary = listed[receipt_id]
            assert (summary["operator"], summary["decision"], summary["outcome"]) == (
                "ship-risk", result["decision"], "applied"), summary

        deadline = time.monotonic() + WAIT
        while not set(results) <= set(got := self.setup.receiver.receipts()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not self.setup.receiver.rejected, self.setup.receiver.rejected
        missing = set(results) - set(got)
        assert not missing, f"{len(missing)} of B's receipts never reached its webhook within {WAIT:g}s"
        assert set(got) == set(results), "B's webhook got receipts B does not have"
        for receipt_id, (plan_id, result) in results.items():
            [event] = got[receipt_id]  # one event per receipt (webhook-id), however often it was delivered
            data = event["data"]
            assert (data["tenant_id"], data["plan_id"], data["outcome"], data["idempotency_key"],
                    data["approver"]) == (self.setup.tenant_b, plan_id, "applied", result["idempotency_key"],
                                          B_APPROVER), data


def wait_connected(api: api_client.Client, name: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while (status := api.get_connector(name).get("status")) != "connected":
        assert time.monotonic() < deadline, f"connector {name} is {status} after {timeout:g}s"
        time.sleep(0.05)
