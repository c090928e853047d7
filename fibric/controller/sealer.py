"""The sealer: a controller service that copies receipts of record (and model call records) into the
auditors' ledger, continuously.

Each pass compares every tenant's chain head in the state store with what
the lake holds (its high-water mark), reads each tenant's next receipts in
tenant_seq order and seals them in one DuckLake commit (fibric/store/sealed.py).
The mark is read from the lake itself, so after a crash the next pass
carries on from exactly there: nothing is sealed twice, nothing skipped.

It wakes every `interval` seconds (for receipts other replicas wrote), or on
`wake()` (the executor calls it after writing receipts), but passes are at
least `min_gap` apart: under load each pass seals many receipts in one
DuckLake commit rather than a commit per receipt, which would spend on
commits the CPU the approvals need. It keeps the lag of what it sealed (the
time from a receipt's commit to its seal) for docs/receipts.md#sealing and
the benchmarks. Every `maintain_every` it merges the small files sealing
leaves behind. When replicas share the lake, only the one holding its
leadership lock seals (store/leadership.py); the others' passes do nothing. All
of its DuckDB work runs on one thread of its own: a DuckDB connection
belongs to one thread at a time, and the hot path never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from datetime import UTC, datetime, timedelta

from fibric import metrics as metrics_module
from fibric import threads
from fibric.store import leadership, receipt_store, sealed

log = logging.getLogger(__name__)

BATCH = 5_000  # receipts per tenant per pass
LAGS_KEPT = 10_000


class Sealer:
    """Seals receipts of record into the sealed ledger; started and stopped with the controller."""

    def __init__(
        self,
        record: receipt_store.StoreLedger,
        lake: sealed.SealedLedger,
        *,
        interval: float = 1.0,
        min_gap: float = 0.5,
        maintain_every: float = 300.0,
        leader: leadership.Leadership | None = None,
        metrics: metrics_module.Metrics | None = None,
    ) -> None:
        """`leader` elects the one replica that seals a lake replicas share (None: this process alone);
        `metrics` receives each pass's lags."""
        self.metrics = metrics or metrics_module.Metrics()
        self.record = record
        self.lake = lake
        self.leader = leader
        self.interval = interval
        self.min_gap = min(min_gap, interval)
        self.maintain_every = maintain_every
        self.pool = threads.Pool("sealer", 1)  # one thread: the lake's connection is used from it only
        self.lags: deque[float] = deque(maxlen=LAGS_KEPT)  # seconds, newest last
        self.sealed = 0
        self._lock = threading.Lock()  # guards _loop: wake() runs on other threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._maintained = time.monotonic()

    def wake(self) -> None:
        """Seal now rather than at the next interval. Thread-safe, never blocks."""
        if self._woken.is_set():  # already woken: no need to wake the loop again (a receipt each)
            return
        with self._lock:
            loop = self._loop
        if loop is None:
            return
        if _running_loop() is loop:
            self._woken.set()
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._woken.set)

    async def start(self) -> None:
        if self._task is None:
            self._woken = asyncio.Event()
            with self._lock:
                self._loop = asyncio.get_running_loop()
            self._task = asyncio.create_task(self._serve(), name="fibric-sealer")

    async def stop(self) -> None:
        with self._lock:
            self._loop = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.leader is not None:
            with contextlib.suppress(Exception):
                await self.pool.run(self.leader.close)  # another replica takes over at once
        self.pool.close(wait=False)

    async def seal_once(self) -> int:
        """One pass: seal every tenant's unsealed receipts (up to BATCH each); how many."""
        return await self.pool.run(self._pass)

    def _pass(self) -> int:
        if self.leader is not None:
            owner, gained = self.leader.hold()
            if not owner:
                return 0  # another replica seals
            if gained:  # the marks this process knew may be behind what the last owner sealed
                self.lake.forget_marks()
        batch = sealed.seal_pending(self.record, self.lake, batch=BATCH)
        now = datetime.now(UTC)
        lags = [(now - r.at).total_seconds() for r in batch]
        self.lags.extend(lags)
        self.sealed += len(batch)
        self.metrics.sealed(lags, caught_up=len(batch) < BATCH)
        sealed.seal_pending_calls(self.record.state, self.lake)  # model call records, beside receipts
        if not batch:
            self._maybe_maintain()
        return len(batch)

    def _maybe_maintain(self) -> None:
        if time.monotonic() - self._maintained >= self.maintain_every:
            self._maintained = time.monotonic()
            try:
                self.lake.maintain(keep=timedelta(seconds=max(60.0, 2 * self.maintain_every)))
            except Exception:
                log.exception("sealed ledger maintenance failed; it is tried again later")

    async def _serve(self) -> None:
        while True:
            started = time.monotonic()
            try:
                while await self.seal_once() >= BATCH:  # a backlog: keep going
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:  # the store or the lake briefly unavailable: the next pass catches up
                log.exception("sealing pass failed; retrying in %.1fs", max(self.interval, 1.0))
                await asyncio.sleep(max(self.interval, 1.0))
            await asyncio.sleep(max(0.0, started + self.min_gap - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self.interval)
            self._woken.clear()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
