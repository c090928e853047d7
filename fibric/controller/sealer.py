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

import contextlib
import logging
import time
from collections import deque
from datetime import UTC, datetime, timedelta

from fibric import metrics as metrics_module
from fibric import threads
from fibric.controller import service
from fibric.store import leadership, receipt_store, sealed

log = logging.getLogger(__name__)

BATCH = 5_000  # receipts per tenant per pass
LAGS_KEPT = 10_000


class Sealer(service.Service):
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
        backoff: service.Backoff | None = None,
    ) -> None:
        """`leader` elects the one replica that seals a lake replicas share (None: this process alone);
        `metrics` receives each pass's lags."""
        super().__init__("sealing", poll_seconds=interval, backoff=backoff, min_gap=min_gap)
        self.metrics = metrics or metrics_module.Metrics()
        self.record = record
        self.lake = lake
        self.leader = leader
        self.maintain_every = maintain_every
        self.pool = threads.Pool("sealer", 1)  # one thread: the lake's connection is used from it only
        self.lags: deque[float] = deque(maxlen=LAGS_KEPT)  # seconds, newest last
        self.sealed = 0
        self._maintained = time.monotonic()

    @property
    def interval(self) -> float:
        return self.poll_seconds

    async def stop(self) -> None:
        """Stop sealing, hand the lake's leadership on at once, and close the sealer's thread."""
        await super().stop()
        if self.leader is not None:
            with contextlib.suppress(Exception):
                await self.pool.run(self.leader.close)  # another replica takes over at once
        self.pool.close(wait=False)

    async def seal_once(self) -> int:
        """One pass: seal every tenant's unsealed receipts (up to BATCH each); how many."""
        return await self.pool.run(self._seal)

    async def _pass(self) -> bool:
        while await self.seal_once() >= BATCH:  # a backlog: keep going
            pass
        return False

    def _seal(self) -> int:
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
