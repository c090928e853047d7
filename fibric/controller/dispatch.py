"""The webhook dispatcher: a controller service that delivers the outbox, durably.

Each pass fans new outbox events out into deliveries, claims the deliveries
that are due as far as free capacity allows, and starts them; `outcome` alone
decides what an attempt means (delivered, retry when, failed, disable the
endpoint). Capacity is `concurrency` attempts in flight, of which one tenant
may hold at most `tenant_deliveries`, and claims take the tenants' oldest due
deliveries in turn (deliveries.claim_due): a tenant whose receivers hang or
whose hosts never resolve holds its own slots, never the queue or the others'
(docs/operations.md#bulkheads). A pass does not wait for the attempts it
started: the next pass runs as soon as a slot frees.
All state is in the store (fibric/store/deliveries.py), so a dispatcher that
stops mid-backoff loses nothing: the next one, in this process or another
replica, picks the deliveries up when they are due. The service wakes every
`poll_seconds`, at once on `wake()`, when an attempt ends (a slot is free) and,
on PostgreSQL, on every committed outbox event (LISTEN/NOTIFY, from any replica).

Retries (docs/webhooks.md#retries): any non-2xx answer, timeout or connection
error is retried after `RETRY_BASE_SECONDS * 2**(n-1)` (capped at
`RETRY_CAP_SECONDS`), each delay jittered by +-20%, until `MAX_AGE_SECONDS`
after the delivery was created, with a final attempt at that moment. 410
Gone fails the delivery and disables the endpoint; so does 24 h of
continuous failure. Deliveries are not ordered: retries and concurrency
overtake one another.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from fibric import errors, settings, store, threads, timefmt, trust
from fibric import metrics as metrics_module
from fibric.controller import delivery as delivery_module
from fibric.controller import service
from fibric.store import deliveries, outbox, secretbox, vault, webhook_store

log = logging.getLogger(__name__)

RETRY_BASE_SECONDS = 30.0
RETRY_CAP_SECONDS = 4 * 3600.0
JITTER = 0.2
MAX_AGE_SECONDS = 24 * 3600.0
DISABLE_AFTER_SECONDS = 24 * 3600.0
BATCH = 100
RETENTION = timedelta(days=30)  # finished deliveries and dispatched events are kept this long
PRUNE_EVERY = timedelta(hours=1)
CLAIM_MARGIN_SECONDS = 60.0  # a claim outlives its attempt's budget by this much

Clock = Callable[[], datetime]


def retry_delay(attempt: int, rng: random.Random) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based)."""
    base = service.Backoff(RETRY_BASE_SECONDS, RETRY_CAP_SECONDS).delay(attempt)
    return base * rng.uniform(1 - JITTER, 1 + JITTER)


def outcome(
    item: deliveries.Delivery, answer: delivery_module.Answer, started: datetime, rng: random.Random
) -> deliveries.Outcome:
    """The one place that decides what an attempt's answer means for its delivery."""
    number = item.attempts + 1
    attempt = deliveries.Attempt(item.id, number, started, answer.duration_ms, answer.status_code,
                                 answer.error)
    after = DISABLE_AFTER_SECONDS
    if answer.ok:
        return deliveries.Outcome(attempt, "delivered", None, disable_after_seconds=after)
    if answer.status_code == 410:
        return deliveries.Outcome(attempt, "failed", None, gone=True, disable_after_seconds=after)
    deadline = item.created_at + timedelta(seconds=MAX_AGE_SECONDS)
    if started >= deadline:
        return deliveries.Outcome(attempt, "failed", None, disable_after_seconds=after)
    due = min(started + timedelta(seconds=retry_delay(number, rng)), deadline)
    return deliveries.Outcome(attempt, "pending", due, disable_after_seconds=after)


class Dispatcher(service.Service):
    """Delivers webhooks; start() and stop() run in the controller's lifespan."""

    def __init__(
        self,
        state: store.StateStore,
        config: settings.WebhookSettings,
        box: secretbox.SecretBox,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        environ: Mapping[str, str] | None = None,
        boundary: trust.Boundary | None = None,
        pool: threads.Pool | None = None,
        tenant_deliveries: int = 4,
        metrics: metrics_module.Metrics | None = None,
        backoff: service.Backoff | None = None,
    ) -> None:
        """`clock` is injectable so tests move time instead of waiting out a backoff
        (without one, which deliveries are due and whose claim lapsed is judged on the
        database's clock, the same for every replica, and this process's clock stamps);
        `environ` is where `secret_env` variables are read (the process environment);
        `boundary` says where each webhook's deliveries may connect (default: the
        development setting of `config` for tenants, anywhere for the installation)
        and resolves their hosts; `pool` runs the store work (the system's delivery
        pool); `tenant_deliveries` is one tenant's share of attempts in flight; `metrics`
        counts the attempts."""
        super().__init__("webhook dispatch", poll_seconds=config.poll_seconds, backoff=backoff)
        self.metrics = metrics or metrics_module.Metrics()
        self.state = state
        self.config = config
        self.box = box
        self.clock = clock or timefmt.now
        self._driven = clock is not None
        self.rng = rng or random.Random()
        self.environ = os.environ if environ is None else environ
        self.boundary = boundary or trust.Boundary(
            webhook_egress=trust.ANYWHERE if config.allow_http_and_private else None)
        self.pool = pool or threads.standalone("delivery")
        self.tenant_deliveries = max(1, tenant_deliveries)
        self._sender: delivery_module.Sender | None = None
        self._in_flight: dict[asyncio.Task[None], str] = {}  # attempt -> its tenant
        self._listener: asyncio.Task[None] | None = None
        self._pruned_at: datetime | None = None

    # --- service ---------------------------------------------------------------

    async def start(self) -> None:
        await super().start()
        url = outbox.listen_url(self.state)  # None: the store announces no commits (SQLite), so poll
        if url is not None and self._listener is None:
            self._listener = asyncio.create_task(self._listen(url), name="fibric-webhooks-listen")

    async def stop(self, *, grace: float = 5.0) -> None:
        """Stop claiming; let attempts in flight finish for `grace` seconds, then drop them.

        A dropped attempt's claim lapses and the delivery is attempted again
        later, here or by another replica (deliveries are at least once).
        """
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        await super().stop()
        await service.finish(self._in_flight, grace)
        await self.aclose()

    @property
    def sender(self) -> delivery_module.Sender:
        if self._sender is None:
            self._sender = delivery_module.Sender(self.config, self.boundary.resolver)
        return self._sender

    async def aclose(self) -> None:
        if self._sender is not None:
            await self._sender.aclose()
            self._sender = None

    async def _pass(self) -> bool:
        """Claim work whenever there is capacity: an attempt that hangs holds its slot, not the queue.

        A pass does not wait for its attempts; each one that ends wakes the service (a slot is free).
        """
        fanned, started = await self._launch()
        return bool(fanned or started)

    async def _listen(self, url: str) -> None:
        """PostgreSQL: wake on every committed outbox event, from any replica (LISTEN/NOTIFY)."""
        while not self._stopping:
            try:
                async for _ in outbox.commits(url):
                    self.wake()
            except errors.TemporaryError as e:  # polling still finds the work; listen again shortly
                log.warning("webhook dispatcher: %s; polling only", e)
                await asyncio.sleep(5)

    # --- one pass ----------------------------------------------------------------

    async def run_once(self) -> int:
        """One pass, awaited to the end (tests): fan out, claim, deliver; returns how much work was done."""
        fanned, started = await self._launch()
        await asyncio.gather(*started, return_exceptions=True)
        return fanned + len(started)

    async def _launch(self) -> tuple[int, list[asyncio.Task[None]]]:
        """Fan out new events, claim what free capacity allows, fairly across tenants, and start it."""
        now = self.clock()
        if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = now
            await self.pool.run(deliveries.prune, self.state, before=now - RETENTION)
        fanned = await self.pool.run(deliveries.fan_out, self.state, now=self._queue_time(), limit=BATCH)
        free = max(1, self.config.concurrency) - len(self._in_flight)
        if free <= 0:
            return fanned, []
        busy = collections.Counter(self._in_flight.values())
        due = await self.pool.run(
            deliveries.claim_due, self.state, now=self._queue_time(),
            lease_seconds=self.sender.attempt_budget_seconds + CLAIM_MARGIN_SECONDS, limit=free,
            per_tenant=self.tenant_deliveries, busy=busy,
        )
        if not due:
            return fanned, []
        found = await self.pool.run(self._endpoints, due)
        gone: dict[str, str] = {}  # endpoints disabled during this pass, and why
        started = []
        for item in due:
            task = asyncio.create_task(self._deliver_one(item, found.get(item.webhook_id), gone),
                                       name=f"fibric-delivery-{item.id}")
            self._in_flight[task] = item.tenant_id
            task.add_done_callback(self._attempt_ended)
            started.append(task)
        return fanned, started

    def _attempt_ended(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self.wake()  # a slot is free: look for more work

    async def _deliver_one(
        self, item: deliveries.Delivery, endpoint: webhook_store.Endpoint | None, gone: dict[str, str]
    ) -> None:
        try:
            if endpoint is None:
                await self.pool.run(deliveries.abandon, self.state, item, "webhook deleted",
                                        now=self.clock())
                return
            if not endpoint.enabled or endpoint.id in gone:
                reason = gone.get(endpoint.id) or endpoint.disabled_reason or "spec.enabled is false"
                await self.pool.run(deliveries.abandon, self.state, item, f"webhook disabled: {reason}",
                                        now=self.clock())
                return
            started = self.clock()
            answer = await self._attempt(item, endpoint, started)
            result = outcome(item, answer, started, self.rng)
            self.metrics.delivery_attempted(item.tenant_id, result.status)
            disabled = await self.pool.run(deliveries.record, self.state, item, endpoint, result,
                                           on_database_clock=not self._driven)
            if disabled:
                gone[endpoint.id] = disabled
                log.warning("webhook %s of tenant %s disabled: %s", endpoint.id, endpoint.tenant_id, disabled)
        except Exception:  # the claim's lease returns the delivery to the queue
            log.exception("delivery %s failed unexpectedly; it will be retried", item.id)

    def _queue_time(self) -> datetime | None:
        """The moment the delivery queue is read and written at: a test's clock, else None, which
        is the database's (the same for every replica)."""
        return self.clock() if self._driven else None

    def _endpoints(self, due: list[deliveries.Delivery]) -> dict[str, webhook_store.Endpoint]:
        """The endpoints of these deliveries as they are now (deleted ones absent), one read per tenant."""
        found: dict[str, webhook_store.Endpoint] = {}
        with self.state.backend.transaction(write=False) as cur:
            for tenant_id in {d.tenant_id for d in due}:
                found.update((e.id, e) for e in webhook_store.of_tenant(cur, tenant_id))
        return found

    async def _attempt(
        self, item: deliveries.Delivery, endpoint: webhook_store.Endpoint, started: datetime
    ) -> delivery_module.Answer:
        try:
            tenant_secret: str | None = None
            if endpoint.spec.get("secret_ref"):  # a store read: off the event loop
                tenant_secret = await self.pool.run(
                    vault.reveal, self.state, self.box, endpoint.tenant_id, endpoint.spec["secret_ref"])
            secrets = endpoint.signing_secrets(self.box, self.environ, started, lambda name: tenant_secret)
        except errors.PermanentError as e:
            return delivery_module.Answer(None, str(e), 0)
        if not secrets:
            return delivery_module.Answer(None, f"no signing secret: {_missing_secret(endpoint)}", 0)
        body = item.body.encode("utf-8")
        # Signed with the wall clock, not the injectable one: receivers compare it with theirs.
        headers = delivery_module.signed_headers(item.event_id, body, secrets, int(time.time()))
        egress = self.boundary.egress_for(trust.Origin(endpoint.origin), "Webhook")
        return await self.sender.post(endpoint.url, body, headers, egress)


def _missing_secret(endpoint: webhook_store.Endpoint) -> str:
    if endpoint.spec.get("secret_ref"):
        return f"the tenant secret {endpoint.spec['secret_ref']} (secret_ref) is not set"
    if endpoint.origin != trust.Origin.INSTALLATION:
        return "secret_env reads a server variable, which only the installation's own specs may"
    return f"{endpoint.spec.get('secret_env')} (secret_env) is not set"
