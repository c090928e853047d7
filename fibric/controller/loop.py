"""The reconcile loop: a work queue of object keys, workers, backoff and a periodic resync.

Writes tell the controller what changed (`notify`, from any thread); a
periodic resync enqueues everything anyway, so objects written by another
replica, another process or a lost notification converge within
`resync_seconds`. Keys are (tenant, kind, name) and are deduplicated while
queued; one key is never reconciled by two workers at once, so a late,
stale reconcile cannot overwrite a newer one.

Every kind is reconciled the same way: a threaded reconcile from the
table (reconcile.reconcilers), preceded, for the kinds that observe
something living on the event loop, by their step there
(observers.Observer). With a connector runtime (`connectors=`), that step
owns it: it is entered in `start` and left in `stop` (stopping every MCP
server), and a Connector key first brings the runtime in line with the
stored spec, then the threaded reconcile writes what it observed as the
object's status. The runtime's own changes come back through `notify`.

Replicas sharing a PostgreSQL store all run a controller (each loads the
policies into its engine and runs its own connectors' MCP sessions), but
one of them records status: the replica that holds the `fibric-status`
leadership (store/leadership.py, given as `leader=`). The others reconcile and
record only the first observation of a new generation (so an apply through
any replica shows at once), so a status does not flap between replicas'
views; when the leader dies another takes over within `LEAD_SECONDS` and
makes a full pass (docs/deploy.md).

This module owns every retry decision (controller-runtime's rule): a
reconcile that raises is logged, its object is marked `Ready` False with
reason ReconcileError, and the key is retried with capped exponential
backoff (a `TemporaryError` may ask for its own delay; a `PermanentError`
waits for the next change or resync). One failing object never holds up
the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, cast

from fibric import connectors as mcp
from fibric import errors, policies, settings, store, threads, timefmt, trust
from fibric.controller import conditions, observers, reconcile, service
from fibric.store import leadership

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (tenant_id, kind, name)
ALL = "*"  # a key's name meaning "every object of this kind in the tenant" (never a valid name)
# Operators' conditions depend on these kinds, so a change to one re-reconciles the tenant's operators.
OPERATOR_INPUTS = frozenset({"Policy", "Connector"})
LEAD_SECONDS = 2.0  # how often a replica checks, or tries to take, the status leadership


class Service(Protocol):
    """A long-running part of the controller, run on its event loop between start and stop.

    The controller's own background services are `service.Service`s (one loop, one backoff).
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class _KeyLock:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class Controller:
    """Runs reconciles on the controller pool, started and stopped by the app's lifespan."""

    def __init__(
        self,
        state: store.StateStore,
        settings: settings.ControllerSettings,
        *,
        reconcilers: Mapping[str, reconcile.Reconciler] | None = None,
        policy_engine: policies.Engine | None = None,
        workers: int = 1,
        base_backoff_seconds: float = service.BASE_BACKOFF_SECONDS,
        stop_timeout_seconds: float = 10.0,
        connectors: mcp.ConnectorRuntime | None = None,
        services: Sequence[Service] = (),
        boundary: trust.Boundary | None = None,
        pool: threads.Pool | None = None,
        leader: leadership.Leadership | None = None,
        answer_check: reconcile.AnswerCheck | None = None,
    ) -> None:
        """`connectors`: the MCP connector runtime to own; build it with
        `on_change=lambda t, n: controller.notify(t, "Connector", n)`.
        `boundary`: what each stored connector may run, by who wrote it (docs/security.md).
        `pool`: the threads reconciles run on (the system's controller pool).
        `leader`: elects the one replica that records status (None: this process alone).
        `answer_check`: whether an operator's LLM route asks for its answer strictly (operator_runs.Runner);
        it reads the connectors' tools, so it runs on the event loop, before the reconcile.
        `services`: long-running parts (operator runs, scheduler, executor
        recovery, webhook dispatcher), started in order after the connectors
        and the reconcile workers, stopped in reverse order before them."""
        if workers < 1:
            raise ValueError("a controller needs at least one worker")
        self.state = state
        self.settings = settings
        # Without explicit reconcilers, policies are compiled once per version and loaded into the engine.
        self.reconcilers = reconcile.reconcilers(policy_engine) if reconcilers is None else reconcilers
        self.workers = workers
        self.base_backoff_seconds = base_backoff_seconds
        self.stop_timeout_seconds = stop_timeout_seconds
        self.connectors = connectors
        self.boundary = boundary or trust.Boundary()
        self.pool = pool or threads.standalone("controller")
        self.services = list(services)
        self.leader = leader
        # The kinds with a step on the event loop first: the connector runtime, operators' answer checks.
        self.observers = observers.for_kinds(state, self.pool, connectors=connectors, boundary=self.boundary,
                                             answer_check=answer_check, stop_timeout=stop_timeout_seconds)
        self._started_observers: list[observers.Observer] = []
        self._recording = leader is None  # whether this replica's reconciles write status
        self._started_services: list[Service] = []
        # notify() runs on arbitrary threads; these three fields are shared with it.
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buffer: list[Key] = []
        self._stopped = False
        # Everything below is touched only on the event loop's thread.
        self._queue: asyncio.Queue[Key] | None = None
        self._queued: set[Key] = set()
        self._key_locks: dict[Key, _KeyLock] = {}
        self._failures: dict[Key, int] = {}
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._busy: set[asyncio.Task[Any]] = set()
        self._closing = False

    # --- public ---------------------------------------------------------------

    def notify(self, tenant_id: str, kind: str, name: str) -> None:
        """Ask for (tenant, kind, name) to be reconciled soon. Thread-safe, never blocks.

        Before `start` the key is buffered; after `stop` it is ignored.
        """
        key = (tenant_id, kind, name)
        with self._lock:
            if self._stopped:
                return
            if self._loop is None:
                self._buffer.append(key)
                return
            loop = self._loop
        with contextlib.suppress(RuntimeError):  # the loop closed under us: nothing left to do
            loop.call_soon_threadsafe(self._notified, key)

    async def start(self) -> None:
        """Spawn the workers and the periodic resync (which begins with a full pass)."""
        if self._closing:
            raise RuntimeError("a stopped controller cannot be started again; make a new one")
        if self._tasks:
            return
        for observer in self.observers.values():
            await observer.start()
            self._started_observers.append(observer)
        self._queue = asyncio.Queue()
        self._tasks = [asyncio.create_task(self._work(), name=f"fibric-reconcile-{n}")
                       for n in range(self.workers)]
        self._tasks.append(asyncio.create_task(self._resync(), name="fibric-resync"))
        if self.leader is not None:
            self._tasks.append(asyncio.create_task(self._lead(self.leader), name="fibric-status-leader"))
        with self._lock:
            self._loop = asyncio.get_running_loop()
            buffered, self._buffer = self._buffer, []
        for key in buffered:
            self._notified(key)
        for part in self.services:
            await part.start()
            self._started_services.append(part)

    async def stop(self) -> None:
        """Stop the services, stop taking work, let in-flight reconciles finish (bounded), cancel the rest."""
        while self._started_services:
            part = self._started_services.pop()
            try:
                await part.stop()
            except Exception:
                log.exception("service %s failed to stop cleanly", type(part).__name__)
        with self._lock:
            self._stopped = True
            self._loop = None
        self._closing = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            if task not in self._busy:
                task.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=self.stop_timeout_seconds)
            for task in pending:
                log.warning("reconcile still running after %.0fs at shutdown; cancelling",
                            self.stop_timeout_seconds)
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.leader is not None:
            await self.pool.run(self.leader.close)
        while self._started_observers:
            await self._started_observers.pop().stop()

    def acknowledge_tools(self, tenant_id: str, name: str, timeout: float = 30.0) -> bool:
        """Accept a running connector's current tool definitions as its pins, then record its status.

        Blocking: call it from a worker thread (an API route), never from the
        event loop. False when there is no runtime or the connector is not
        running in it; the caller then acknowledges through the pin store.
        """
        runtime = self.connectors
        with self._lock:
            loop = self._loop
        if runtime is None or loop is None:
            return False
        future = asyncio.run_coroutine_threadsafe(self._acknowledge(runtime, tenant_id, name), loop)
        try:
            return future.result(timeout)
        except TimeoutError as e:
            future.cancel()
            raise errors.TemporaryError(f"acknowledging connector '{name}' timed out", delay=1.0) from e

    async def reconcile_all(self) -> None:
        """One full pass over every object of every tenant, awaited (start-up and tests)."""
        objects = await self.pool.run(self.state.all_objects)
        for obj in objects:
            await self._process((obj.tenant_id, obj.kind, obj.name))

    # --- queue ------------------------------------------------------------------

    def _notified(self, key: Key) -> None:
        self._add(key)
        tenant_id, kind, _ = key
        if kind in OPERATOR_INPUTS:
            self._add((tenant_id, "Operator", ALL))

    def _add(self, key: Key) -> None:
        if self._closing or self._queue is None or key in self._queued:
            return
        self._queued.add(key)
        self._queue.put_nowait(key)

    def _add_later(self, key: Key, delay: float) -> None:
        if self._closing or self._queue is None:  # not running: nobody would take it
            return
        previous = self._timers.pop(key, None)
        if previous is not None:
            previous.cancel()
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self._add(key)

    async def _work(self) -> None:
        queue = self._queue
        task = asyncio.current_task()
        if queue is None or task is None:
            return
        while not self._closing:
            key = await queue.get()
            self._queued.discard(key)
            self._busy.add(task)
            try:
                await self._process(key)
            except Exception:  # a bug in the loop itself: keep the worker alive
                log.exception("reconcile loop error on %s", key)
            finally:
                self._busy.discard(task)

    async def _resync(self) -> None:
        while not self._closing:
            try:
                objects = await self.pool.run(self.state.all_objects)
            except Exception:
                log.exception("resync could not list objects; trying again next period")
            else:
                for obj in objects:
                    self._add((obj.tenant_id, obj.kind, obj.name))
                # What an observer runs but the store lost without a notification (another replica
                # deleted it) is reconciled too, so it stops.
                for kind, observer in self.observers.items():
                    present = {(o.tenant_id, o.name) for o in objects if o.kind == kind}
                    for tenant_id, name in observer.running() - present:
                        self._add((tenant_id, kind, name))
            await asyncio.sleep(self.settings.resync_seconds)

    async def _lead(self, leader: leadership.Leadership) -> None:
        """Keep (or try to take) the status leadership; a replica that gains it makes a full pass."""
        while not self._closing:
            try:
                self._recording, gained = await self.pool.run(leader.hold)
            except Exception:
                log.exception("could not check the status leadership; not recording status meanwhile")
                self._recording, gained = False, False
            if gained:
                for obj in await self.pool.run(self.state.all_objects):
                    self._add((obj.tenant_id, obj.kind, obj.name))
            await asyncio.sleep(LEAD_SECONDS)

    # --- one key ------------------------------------------------------------------

    async def _process(self, key: Key) -> None:
        """Reconcile one key and decide what happens next: done, requeue, or retry with backoff."""
        async with self._exclusive(key):
            try:
                if key[2] == ALL:
                    await self._fan_out(key)
                    result = reconcile.Result()
                else:
                    now = timefmt.now()
                    observer = self.observers.get(key[1])
                    observed = await observer.observe(key[0], key[2], now) if observer else None
                    result = await self.pool.run(self._reconcile, key, now, observed)
            except Exception as e:
                self._failed(key, e)
                return
        self._failures.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if result.requeue_after is not None:
            self._add_later(key, max(0.0, result.requeue_after))

    async def _fan_out(self, key: Key) -> None:
        tenant_id, kind, _ = key
        objects = await self.pool.run(self.state.list_objects, tenant_id, kind)
        for obj in objects:
            self._add((tenant_id, kind, obj.name))

    async def _acknowledge(self, runtime: mcp.ConnectorRuntime, tenant_id: str, name: str) -> bool:
        if name not in runtime.names(tenant_id):
            return False
        await runtime.ack(tenant_id, name)
        await self._process((tenant_id, "Connector", name))  # store the cleared condition before answering
        return True

    def _reconcile(self, key: Key, now: datetime, observed: reconcile.Reconciler | None = None
                   ) -> reconcile.Result:
        """Runs in a worker thread: read the object fresh and reconcile it; record a failure on it.

        `observed` is the kind's reconciler bound to what its observer saw on the loop, if it has one.
        """
        tenant_id, kind, name = key
        reconciler = observed or self.reconcilers.get(kind)
        if reconciler is None:
            log.warning("no reconciler for kind %s; skipping '%s'", kind, name)
            return reconcile.Result()
        try:
            obj = self.state.get_object(tenant_id, kind, name)
        except errors.NotFound:
            return reconcile.Result()  # deleted: nothing left to observe
        state = self.state if self._recording else cast(store.StateStore, _Observing(self.state))
        try:
            return reconciler(state, obj, now)
        except Exception as e:
            # Recorded while this key is still held, so it cannot overwrite a newer success.
            self._mark_failed(key, reconcile.failure_message(e), now, reconcile.failure_reason(e))
            raise

    def _failed(self, key: Key, error: Exception) -> None:
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        cap = self.settings.max_backoff_seconds
        delay: float | None
        if isinstance(error, errors.PermanentError):
            delay = None  # retrying unchanged will not help; a change or the resync will
        elif isinstance(error, errors.TemporaryError):
            delay = min(cap, max(error.delay, 0.0))
        else:
            delay = service.Backoff(self.base_backoff_seconds, cap).delay(failures)
        log.error(
            "reconcile of %s '%s' (tenant %s) failed (attempt %d)%s: %s",
            key[1], key[2], key[0], failures,
            f"; retrying in {delay:.1f}s" if delay is not None else "",
            error, exc_info=not isinstance(error, errors.FibricError),
        )
        if delay is not None:
            self._add_later(key, delay)

    def _mark_failed(self, key: Key, message: str, now: datetime, reason: str = "ReconcileError") -> None:
        if not self._recording:
            return  # the leader records it (its own reconcile fails the same way)
        try:
            obj = self.state.get_object(*key)
            conds = conditions.set_condition(
                conditions.of(obj.status), conditions.READY, conditions.FALSE, reason, message, now,
            )
            status = {**obj.status, "conditions": conds}
            if status != obj.status:
                self.state.set_status(obj, status)
        except errors.NotFound:
            pass
        except Exception:
            log.exception("could not record the reconcile error of %s '%s'", key[1], key[2])

    @contextlib.asynccontextmanager
    async def _exclusive(self, key: Key) -> AsyncIterator[None]:
        """One reconcile per key at a time, whether from a worker or reconcile_all."""
        entry = self._key_locks.get(key)
        if entry is None:
            entry = self._key_locks[key] = _KeyLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._key_locks[key]


class _Observing:
    """The store as a replica that does not lead sees it in a reconcile: it records only what is new.

    Its reconciles still do their per-replica work (loading a policy into
    this replica's engine, checking references). A status that observes a
    generation the stored one has not (a spec just applied through this
    replica) is recorded at once, so a change shows without waiting for the
    leader's resync; every other status change is the leader's to record.
    """

    def __init__(self, state: store.StateStore) -> None:
        self._state = state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._state, name)

    def set_status(self, obj: store.StoredObject, status: dict[str, Any]) -> bool:
        if status.get("observed_generation") == obj.observed_generation:
            return True
        return self._state.set_status(obj, status)
