"""Two promises of the bulkheads: a DNS deadline is an ordinary failed attempt, and SIGTERM is bounded.

- A webhook delivery whose host cannot be resolved within the DNS deadline is
  a failed attempt, retried with backoff like any other failure, and the
  lookup takes no thread of the loop's default executor.
- SIGTERM ends `fibric serve` within the default bound (10 s) even when work
  is stuck in a driver: here every write waits on a SQLite lock held by
  another process, which would hold a graceful stop for its 30 s busy timeout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import secrets
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from bulkhead_servers import RecordingExecutor, SilentDns, start_stuck_write
from served_process import RUNNING, Served

from fibric import settings, specs, store, trust
from fibric.controller import applier, dispatch
from fibric.store import deliveries, plan_store, secretbox
from fibric.trust import resolver

KEY = base64.b64encode(os.urandom(32)).decode()
DNS_DEADLINE = 0.5  # seconds; the connect timeout (5 s) is far longer, so the deadline is what ends a lookup
DEFAULT_BOUND = 10.0  # FIBRIC_SHUTDOWN_SECONDS when unset (docs/operations.md#shutdown)
EXIT_MARGIN = 2.0


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def test_a_webhook_host_whose_dns_never_answers_fails_at_the_deadline_and_backs_off(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    dns = SilentDns()
    box = secretbox.SecretBox(key=KEY)
    host = f"{secrets.token_hex(6)}.hang.test"
    document = specs.build("Webhook", "unresolvable",
                           {"url": f"https://{host}/h", "events": ["plan.proposed"]})
    applier.apply(state, tenant.id, [specs.Loaded(document, specs.Source(file=""))],
                  origin=trust.Origin.TENANT,
                  options=applier.Options(trust.Boundary(webhook_egress=trust.ANYWHERE), box))
    webhook = state.get_object(tenant.id, "Webhook", "unresolvable")
    plan_store.propose(state, tenant.id, operator_id="op_1", actions=[], policy_id=None)

    clock = Clock()
    boundary = trust.Boundary(resolver=resolver.Resolver(
        timeout=DNS_DEADLINE, nameservers=[f"127.0.0.1:{dns.port}"], hosts_file=None))
    config = settings.WebhookSettings(secret_key=KEY, connect_timeout_seconds=5.0, read_timeout_seconds=5.0)
    service = dispatch.Dispatcher(
        state, config, box, clock=clock, rng=random.Random(7), environ={}, boundary=boundary)
    library = RecordingExecutor()

    async def main() -> tuple[int, float, int]:
        asyncio.get_running_loop().set_default_executor(library)
        try:
            started = time.monotonic()
            first = await service.run_once()
            took = time.monotonic() - started
            clock.now += timedelta(seconds=dispatch.RETRY_BASE_SECONDS * (1 + dispatch.JITTER) + 1)
            return first, took, await service.run_once()
        finally:
            await service.aclose()
            service.pool.close()

    try:
        first, took, second = asyncio.run(main())
        queries = dns.queries
    finally:
        dns.close()

    assert first == 2 and second == 1  # fanned out and attempted; then attempted again once due
    assert queries >= 1, "the lookup never reached the installation's DNS server"
    assert took < 3.0, f"an attempt whose DNS never answers took {took:.1f}s (deadline {DNS_DEADLINE}s)"
    [item] = deliveries.list_deliveries(state, tenant.id, webhook.id)
    assert item.status == "pending" and item.attempts == 2, item
    assert item.last_error is not None and f"cannot resolve {host}" in item.last_error, item.last_error
    assert item.next_attempt_at is not None
    backoff = (item.next_attempt_at - clock.now).total_seconds()  # the second failure: 60 s +-20%
    assert 2 * dispatch.RETRY_BASE_SECONDS * (1 - dispatch.JITTER) - 1 <= backoff <= \
        2 * dispatch.RETRY_BASE_SECONDS * (1 + dispatch.JITTER) + 1, backoff
    assert library.submitted == [], f"work went to the loop's default executor: {library.submitted}"


def test_sigterm_ends_serve_within_the_default_bound_while_writes_are_stuck_in_the_driver(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    state = store.open_store(data)
    try:
        tenant = state.create_tenant("tenant-a", "rs_fibric")
        _, key = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    finally:
        state.close()
    served = Served(["--data-dir", str(data)], cwd=tmp_path)  # no FIBRIC_SHUTDOWN_SECONDS: the default
    blocker = sqlite3.connect(data / "state.db", isolation_level=None, timeout=30)
    try:
        running = served.wait_for(RUNNING)
        assert running is not None, served.text
        url = running.group(1)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
            assert http.post("/v1/events", json={"type": "t.before", "entity_key": "e:1",
                                                 "idempotency_key": "before", "data": {}}).status_code == 202
        blocker.execute("BEGIN EXCLUSIVE")  # every writer now waits out SQLite's busy timeout (30 s)

        stuck = start_stuck_write(url, key)
        time.sleep(2.0)  # the request's insert, and the services' passes, are waiting on the lock
        assert stuck.is_alive(), "the write did not wait on the lock: the test proves nothing"

        started = time.monotonic()
        served.process.terminate()
        try:
            code = served.process.wait(timeout=DEFAULT_BOUND + 30)
        except Exception:  # still running long past its bound
            code = -999
        exited = time.monotonic() - started
    finally:
        with contextlib.suppress(sqlite3.Error):
            blocker.execute("ROLLBACK")
        blocker.close()
        served.kill()

    said = served.text
    assert code == 0, said[-3000:]
    assert exited <= DEFAULT_BOUND + EXIT_MARGIN, f"SIGTERM to exit took {exited:.1f}s: {said[-3000:]}"
    assert f"shutdown took longer than {DEFAULT_BOUND:g}s" in said, said[-3000:]
