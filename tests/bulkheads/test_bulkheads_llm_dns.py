"""An operator run's LLM route resolves its provider's name like webhooks do: a deadline, no thread.

The routes share one client (proposers.llm.Connections, wired by system.build)
whose connections resolve with the installation's resolver. So a provider
whose DNS server never answers fails the attempt at FIBRIC_DNS_TIMEOUT_MS
(then the route's retries), far sooner than the route's own timeout, and no
lookup waits on the loop's default executor (which `fibric serve` keeps for
libraries, 2 threads). Against real servers on loopback: a UDP DNS server
that never answers, and an OpenAI-compatible provider (tests/proposers/fake_provider.py).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bulkhead_servers import RecordingExecutor, SilentDns

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "proposers"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "executor"))

import orders_system
from executor_support import running
from fake_provider import Provider, Reply, completion
from proposer_support import event, situation, spec

from fibric import proposers, store
from fibric.proposers import llm
from fibric.settings import LlmSettings
from fibric.trust import resolver

DNS_DEADLINE = 0.5  # seconds; the route's timeout (10 s) is far longer, so the deadline is what ends a lookup
ROUTE_TIMEOUT = 10
PLAN = {"actions": [{"capability": "orders.hold", "entity_key": "order:SO-1", "idempotency_key": None,
                     "args": {"order_id": "SO-1", "reason": "carrier has not scanned"}}]}


@pytest.fixture
def silent_dns() -> Iterator[SilentDns]:
    dns = SilentDns()
    yield dns
    dns.close()


def route(base_url: str, **more: Any) -> LlmSettings:
    return LlmSettings(routes={"gpt": {
        "base_url": base_url, "model": "gpt-test", "tenants": "*", "timeout_seconds": ROUTE_TIMEOUT,
        "max_retries": 1, "retry_backoff_seconds": 0.01, **more}})


def hosts_file(tmp_path: Path, name: str) -> Path:
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 {name}\n", encoding="utf-8")
    return hosts


def test_a_provider_whose_dns_never_answers_fails_at_the_deadline_on_no_default_executor_thread(
    silent_dns: SilentDns,
) -> None:
    host = f"{secrets.token_hex(6)}.hang.test"
    connections = llm.Connections(resolver.Resolver(
        timeout=DNS_DEADLINE, nameservers=[f"127.0.0.1:{silent_dns.port}"], hosts_file=None))
    calls: list[proposers.ModelCall] = []
    proposer = proposers.for_model("gpt", "t_acme", route(f"https://{host}/v1"), environ={},
                                   http=connections.client, on_call=calls.append)
    library = RecordingExecutor()

    async def main() -> tuple[BaseException, float]:
        asyncio.get_running_loop().set_default_executor(library)
        try:
            started = time.monotonic()
            with pytest.raises(proposers.ProposalError) as caught:
                await proposer.propose(situation(spec(model="gpt"), [event()]))
            return caught.value, time.monotonic() - started
        finally:
            await connections.stop()

    error, took = asyncio.run(main())

    assert "connection failed (ConnectError) (gave up after 2 attempts)" in str(error)
    assert silent_dns.queries >= 1, "the lookup never reached the installation's DNS server"
    # The first attempt waits out the deadline; the retry finds the failure cached (5 s) at once.
    assert DNS_DEADLINE * 0.8 <= took < 2 * DNS_DEADLINE + 2.0, (
        f"two attempts whose DNS never answers took {took:.1f}s (deadline {DNS_DEADLINE}s)")
    assert [c.outcome for c in calls] == ["connection_error", "connection_error"]
    assert DNS_DEADLINE * 800 <= calls[0].latency_ms < (DNS_DEADLINE + 1.0) * 1000, calls[0].latency_ms
    assert library.submitted == [], f"work went to the loop's default executor: {library.submitted}"


def test_a_provider_named_in_the_installations_hosts_file_answers_and_the_client_outlives_a_stop(
    tmp_path: Path, silent_dns: SilentDns,
) -> None:
    name = f"llm-{secrets.token_hex(4)}.internal"  # only the installation's resolver knows it
    connections = llm.Connections(resolver.Resolver(
        timeout=DNS_DEADLINE, nameservers=[f"127.0.0.1:{silent_dns.port}"],
        hosts_file=hosts_file(tmp_path, name)))
    library = RecordingExecutor()
    with Provider() as provider:
        port = provider.base_url.split(":")[2].split("/")[0]
        proposer = proposers.for_model("gpt", "t_acme", route(f"http://{name}:{port}/v1"), environ={},
                                       http=connections.client)
        provider.script = [Reply(body=completion(json.dumps(PLAN))), Reply(body=completion(json.dumps(PLAN)))]

        async def main() -> list[list[str]]:
            asyncio.get_running_loop().set_default_executor(library)
            made = []
            try:
                for _ in range(2):  # the controller stopped and started again: the same client serves
                    actions = await proposer.propose(situation(spec(model="gpt"), [event()]))
                    made.append([a.capability for a in actions])
                    await connections.stop()
            finally:
                await connections.stop()
            return made

        made = asyncio.run(main())

    assert made == [["orders.hold"], ["orders.hold"]]
    assert [r.headers["host"] for r in provider.received] == [f"{name}:{port}"] * 2
    assert silent_dns.queries == 0  # the hosts file answered
    assert library.submitted == [], f"work went to the loop's default executor: {library.submitted}"


OPERATOR = {"apiVersion": "fibric.io/v1", "kind": "Operator", "metadata": {"name": "ship-risk-llm"},
            "spec": {"capabilities": ["orders.hold", "orders.notify"], "policy": "ship-risk-guard",
                     "model": "gpt", "subscribes": ["order.updated"]}}


def test_the_system_gives_runs_the_installations_resolver(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path, silent_dns: SilentDns,
) -> None:
    if state.dialect != "sqlite":
        pytest.skip("the runs' HTTP client does not depend on the store")
    name = f"llm-{secrets.token_hex(4)}.internal"
    dns = resolver.Resolver(timeout=DNS_DEADLINE, nameservers=[f"127.0.0.1:{silent_dns.port}"],
                            hosts_file=hosts_file(tmp_path, name))
    boundary = orders_system.orders_boundary(tmp_path / "orders.db", resolver=dns)
    plan = {"actions": [{"capability": "orders.hold", "entity_key": "order:SO-10884", "idempotency_key": None,
                         "args": {"reason": "will miss ship-by date", "order_id": None}}]}
    with Provider() as provider:
        port = provider.base_url.split(":")[2].split("/")[0]
        config = route(f"http://{name}:{port}/v1", mode="json_object")
        with running(state, tenant, tmp_path, routing=True, llm=config, boundary=boundary) as f, \
                f.client() as c:
            assert c.post("/v1/apply", json={"documents": [OPERATOR]}).status_code == 200
            provider.script = [Reply(body=completion(json.dumps(plan)))]
            response = c.post("/v1/events", json={
                "type": "order.updated", "entity_key": "order:SO-10884", "idempotency_key": "e-dns",
                "data": {"status": "open", "carrier_scanned": False}})
            assert response.status_code in (200, 202), response.text
            operator_id = c.get("/v1/operators/ship-risk-llm").json()["id"]
            deadline = time.monotonic() + 60
            while not (listed := c.get("/v1/plans", params={"operator_id": operator_id}).json()["data"]):
                assert time.monotonic() < deadline, "no plan from the LLM operator"
                time.sleep(0.05)
            assert c.get(f"/v1/plans/{listed[0]['id']}").json()["proposed_by"] == "llm:gpt"
    assert [r.headers["host"] for r in provider.received] == [f"{name}:{port}"]
    assert silent_dns.queries == 0
