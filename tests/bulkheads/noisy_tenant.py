"""Tenant A, the noisy neighbour: declares its faults through the API and keeps them busy.

Each fault is a letter (bulkhead_support.py's table). A applies its specs
with its own key, as any tenant would; its loopback URLs pass because the
installation's egress allowlist names 127.0.0.1, and its webhook host goes
to the installation's DNS server, which never answers. Background threads
then send A's events and approve whatever its operators propose, so every
fault has work in flight while B is measured; `wait_in_flight` shows it.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from bulkhead_support import Installation, wait_connected

from fibric import client as api_client

A_EVENTS_PER_SECOND = 4.0  # A's background events while faults a-d are active
A_APPROVALS_PER_SECOND = 2.0  # A's whole write budget, 120 a minute (the reference's default), spread out
APPROVED = ("a-chatter", "a-stall", "a-slowpoke")  # a-void's plans fail at once: A leaves them be

# Far more work than a 100 ms budget allows, on every input (n depends on the input, so it is not
# folded at compile time): n*n iterations over numbers.range, seconds of CPU if it were let run.
SLOW_REGO = (
    "package tenant_a.slow\n\nimport rego.v1\n\n"
    "n := 1000 + count(input.action.entity_key)\n\n"
    'decision := {"decision": "ALLOW", "rule": sprintf("%d", [count({x |\n'
    "\tsome x in numbers.range(1, n)\n\tsome y in numbers.range(1, n)\n\tx == y\n})])}\n"
)
ALLOW_REGO = ('package tenant_a.allow\n\nimport rego.v1\n\n'
              'decision := {"decision": "ALLOW", "rule": "allow-all"}\n')




def a_documents(setup: Installation, faults: Sequence[str]) -> list[dict[str, Any]]:
    """A's specs: its own order system, an allow-all operator, and whatever each fault needs."""
    def doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "fibric.io/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}

    def operator(name: str, capability: str, policy: str, subscribes: str) -> dict[str, Any]:
        return doc("Operator", name, {
            "capabilities": [capability], "policy": policy, "model": "rules", "subscribes": [subscribes],
            "rules": [{"when": "event != null", "actions": [{"capability": capability,
                                                              "args": {"reason": "tenant A"}}]}]})

    every = ["plan.proposed", "plan.executed", "action.disposed", "receipt.created"]
    documents = [
        doc("Connector", "a-orders", {"transport": {"catalog": "orders-a"},
                                      "capabilities": {"orders.hold": "orders.hold"}}),
        doc("Policy", "a-allow", {"rego": ALLOW_REGO, "query": "data.tenant_a.allow.decision"}),
        operator("a-chatter", "orders.hold", "a-allow", "a.chatter"),
    ]
    if "a" in faults:
        name = secrets.token_hex(6)
        documents.append(doc("Webhook", "a-unresolvable",
                             {"url": f"https://{name}.hang.test/h", "events": every}))
    if "b" in faults:
        documents.append(doc("Webhook", "a-silent", {"url": f"{setup.receiver_hole.url}/h", "events": every}))
    if "c" in faults:
        documents += [
            doc("Connector", "a-stalled", {"transport": {"http": {"url": setup.stalled.url}},
                                           "capabilities": {"stall.hold": "stall.hold"}}),
            doc("Connector", "a-blackhole", {
                "transport": {"http": {"url": f"{setup.connector_hole.url}/mcp"}},
                "capabilities": {"void.hold": "void.hold"}}),
            operator("a-stall", "stall.hold", "a-allow", "a.stall"),
            operator("a-void", "void.hold", "a-allow", "a.void"),
        ]
    if "d" in faults:
        documents += [
            doc("Policy", "a-slow", {"rego": SLOW_REGO, "query": "data.tenant_a.slow.decision"}),
            operator("a-slowpoke", "orders.hold", "a-slow", "a.slow"),
        ]
    return documents


class TenantA:
    """Declares A's faults through the API and keeps them busy in the background until stopped.

    A is a well-behaved client that uses all it is allowed: on a 429 it waits for
    its Retry-After (a client hammering past its limit is another test's subject).
    Its events come from a process of their own (`send_events`), so a burst of them
    competes with B for the server, not for this process's interpreter.
    """

    APPROVERS = 48  # A's approvals of hanging tool calls wait 30 s each: many may be in flight

    def __init__(self, setup: Installation, faults: Sequence[str]) -> None:
        self.setup = setup
        self.faults = tuple(faults)
        self.stop_event = threading.Event()
        spawn = multiprocessing.get_context("spawn")
        self._sender: multiprocessing.process.BaseProcess | None = None
        self._sender_stop = spawn.Event()
        self._sent = spawn.Value("i", 0)  # events accepted
        self._limited = spawn.Value("i", 0)  # events refused with 429
        self.approval_codes: dict[int, int] = {}
        self._approving: dict[str, int] = {}  # operator name -> approvals in flight
        self._operators: dict[str, str] = {}  # operator id -> name
        self._lock = threading.Lock()
        self._submitted: set[str] = set()
        self._write_budget_at = 0.0  # after a 429, approvals wait for this moment (its Retry-After)
        self._threads: list[threading.Thread] = []
        self._approvers = ThreadPoolExecutor(self.APPROVERS, thread_name_prefix="tenant-a-approve")

    def api(self) -> api_client.Client:
        return api_client.Client(self.setup.url, self.setup.key_a, timeout=60)

    def http(self, timeout: float = 90) -> httpx.Client:
        return httpx.Client(base_url=self.setup.url, timeout=timeout,
                            headers={"Authorization": f"Bearer {self.setup.key_a}"})

    def declare(self) -> None:
        """Apply A's specs (the installation's egress allowlist lets its loopback URLs through)."""
        with self.api() as api:
            api.apply(a_documents(self.setup, self.faults))
            wait_connected(api, "a-orders")
            if "c" in self.faults:
                wait_connected(api, "a-stalled")
            self._operators = {o["id"]: o["name"] for o in api.list_operators()}

    def start(self) -> None:
        kinds = {"a": ["a.chatter"], "b": ["a.chatter"], "c": ["a.stall", "a.void"], "d": ["a.slow"],
                 "e": ["a.chatter"], "n": ["a.chatter"]}
        types = list(dict.fromkeys(t for f in self.faults for t in kinds[f]))
        rate = 0.0 if "e" in self.faults else A_EVENTS_PER_SECOND  # e: the whole budget, at once
        self._sender = multiprocessing.get_context("spawn").Process(
            target=send_events, name="tenant-a-events", daemon=True,
            args=(self.setup.url, self.setup.key_a, types, rate, self._sent, self._limited,
                  self._sender_stop))
        self._sender.start()
        if set(self.faults) & {"a", "b", "c", "d", "n"}:
            self._spawn(self._approve_proposed)

    @property
    def sent(self) -> int:
        return int(self._sent.value)

    @property
    def limited(self) -> int:
        return int(self._limited.value)

    def stop(self) -> None:
        self.stop_event.set()
        self._sender_stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        if self._sender is not None:
            self._sender.join(timeout=10)
            if self._sender.is_alive():
                self._sender.kill()
                self._sender.join(timeout=10)
        self._approvers.shutdown(wait=False, cancel_futures=True)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=f"tenant-a-{target.__name__}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _approve_proposed(self) -> None:
        """Approve what A's operators propose, each operator in turn, spread over A's write budget.

        So approvals of hanging calls pile up while the slow policy keeps deciding, all along.
        """
        due = time.monotonic()
        with self.http(timeout=60) as http:
            while not self.stop_event.is_set():
                try:
                    answer = http.get("/v1/plans", params={"status": "proposed", "limit": 100})
                except httpx.TransportError:
                    return
                if answer.status_code != 200:
                    self.stop_event.wait(1.0)
                    continue
                by_operator: dict[str, list[str]] = {}
                for plan in reversed(answer.json()["data"]):  # oldest first
                    operator = self._operators.get(plan["operator_id"], "?")
                    if operator in APPROVED and plan["id"] not in self._submitted:
                        by_operator.setdefault(operator, []).append(plan["id"])
                turns = [p for group in itertools.zip_longest(*by_operator.values()) for p in group if p]
                operator_of = {p: o for o, ids in by_operator.items() for p in ids}
                for plan_id in turns[:4]:  # then look again: new plans of another operator come first
                    due = max(due, self._write_budget_at)
                    if self.stop_event.wait(max(0.0, due - time.monotonic())):
                        return
                    due += 1.0 / A_APPROVALS_PER_SECOND
                    with self._lock:
                        self._submitted.add(plan_id)
                    with contextlib.suppress(RuntimeError):  # stopped meanwhile
                        self._approvers.submit(self._approve, plan_id, operator_of[plan_id])
                if not turns:
                    self.stop_event.wait(0.25)

    def _approve(self, plan_id: str, operator: str) -> None:
        with self._lock:
            self._approving[operator] = self._approving.get(operator, 0) + 1
        try:
            with self.http() as http:
                answer = http.post(f"/v1/plans/{plan_id}/approve", json={})
            code, retry_after = answer.status_code, float(answer.headers.get("Retry-After") or 1)
        except httpx.HTTPError:
            code, retry_after = 0, 1.0
        with self._lock:
            self._approving[operator] -= 1
            self.approval_codes[code] = self.approval_codes.get(code, 0) + 1
            if code == 429:  # over A's write budget: approve it again once the window resets
                self._submitted.discard(plan_id)
                self._write_budget_at = max(self._write_budget_at, time.monotonic() + retry_after)

    # --- evidence that the faults are live -------------------------------------------------------

    def approving(self, operator: str) -> int:
        """A's approvals of this operator's plans in flight now."""
        with self._lock:
            return self._approving.get(operator, 0)

    def describe(self) -> str:
        with self._lock:
            approving = {k: v for k, v in self._approving.items() if v}
        return (f"A sent {self.sent} events ({self.limited} refused with 429), approvals answered "
                f"{self.approval_codes}, in flight {approving}, dns queries {self.setup.dns.queries}, "
                f"silent receiver connections {self.setup.receiver_hole.open_connections}, "
                f"stalled calls {self.setup.stalled.in_flight()}")

    def wait_in_flight(self, timeout: float = 90.0, *, strict: bool = True) -> dict[str, object]:
        """Return the moment every one of A's faults has work in flight in the server; the evidence.

        Past `timeout`, an AssertionError, or with `strict` False the evidence as it stands.

        a: a DNS query arrived less than a second ago (each lookup waits FIBRIC_DNS_TIMEOUT_MS, 2 s);
        b: a delivery holds a connection to the silent receiver; c: the stalled server holds a call
        and A has approvals of it waiting; d: A has an approval of the slow policy's plans in flight;
        e: A's events wait for runs (routed, queued or running).
        """
        dns_seen, dns_at = self.setup.dns.queries, 0.0
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if self.setup.dns.queries != dns_seen:
                dns_seen, dns_at = self.setup.dns.queries, now
            checks: dict[str, object] = {}
            if "a" in self.faults:
                checks["a"] = now - dns_at < 1.0
            if "b" in self.faults:
                checks["b"] = self.setup.receiver_hole.open_connections
            if "c" in self.faults:
                checks["c"] = min(self.setup.stalled.in_flight(), self.approving("a-stall"))
            if "d" in self.faults:
                checks["d"] = self.approving("a-slowpoke")
            if "e" in self.faults:
                checks["e"] = self.setup.backlog(self.setup.tenant_a)
            if all(checks.values()) or (not strict and now >= deadline):
                return checks
            assert now < deadline, f"A's faults were not all in flight within {timeout:g}s: {checks}; " \
                                   f"{self.describe()}"
            time.sleep(0.01)


def send_events(
    url: str, key: str, types: list[str], rate: float, sent: Any, limited: Any, stop: Any
) -> None:
    """A's events, in a process of its own: `rate` a second, or (0) as fast as they are accepted.

    On a 429 it waits for the Retry-After, so with rate 0 it spends A's whole budget
    as soon as each window opens (the fixed window allows that), then waits for the next.
    """
    with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"}) as http:
        n = 0
        while not stop.is_set():
            n += 1
            kind = types[n % len(types)]
            try:
                answer = http.post("/v1/events", json={
                    "type": kind, "entity_key": f"a:{kind}:{n}",
                    "idempotency_key": f"a:{n}:{time.time()}", "data": {"n": n}})
            except httpx.TransportError:
                return  # the server is gone (a SIGTERM test)
            if answer.status_code == 429:
                with limited.get_lock():
                    limited.value += 1
                stop.wait(float(answer.headers.get("Retry-After") or 1))
                continue
            with sent.get_lock():
                sent.value += 1
            if rate:
                stop.wait(1.0 / rate)
