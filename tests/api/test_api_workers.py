"""workers.run: blocking route work in a worker thread, with the caller's context, outlasting cancellation."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest
from api_support import TestClient

from fibric import settings, store
from fibric.api import create_app, workers
from fibric.store import receipts

REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")


def test_the_work_runs_off_the_event_loop_with_the_callers_context() -> None:
    async def main() -> tuple[str, bool]:
        REQUEST.set("req_1")
        loop_thread = threading.get_ident()
        return await workers.run(lambda: (REQUEST.get(), threading.get_ident() != loop_thread))

    assert asyncio.run(main()) == ("req_1", True)


def test_errors_reach_the_caller() -> None:
    def fail() -> None:
        raise ValueError("no such row")

    with pytest.raises(ValueError, match="no such row"):
        asyncio.run(workers.run(fail))


def test_a_cancelled_caller_waits_for_the_thread_to_finish() -> None:
    started = threading.Event()
    finished: list[float] = []

    def write() -> None:
        started.set()
        time.sleep(0.3)
        finished.append(time.monotonic())

    async def main() -> float:
        task = asyncio.create_task(workers.run(write))
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic()

    cancelled_at = asyncio.run(main())
    assert finished and finished[0] <= cancelled_at  # the write was over before the cancel went on


def test_worker_threads_come_from_the_environment() -> None:
    assert settings.Settings.from_env({"FIBRIC_WORKER_THREADS": "2"}).server.worker_threads == 2
    assert settings.Settings.from_env({}).server.worker_threads is None


def test_the_app_runs_its_routes_on_the_configured_threads(
    state: store.StateStore, ledger: receipts.Ledger, tenant: store.Tenant
) -> None:
    _, secret = state.create_api_key(tenant.id, frozenset({"operators:read"}))
    config = settings.Settings(server=settings.ServerSettings(worker_threads=1))
    with TestClient(create_app(config, state, receipts=ledger),
                    headers={"Authorization": f"Bearer {secret}"}) as client:
        for _ in range(3):
            assert client.get("/v1/operators").status_code == 200
        names = [t.name for t in threading.enumerate() if t.name.startswith("fibric-worker")]

    assert names == ["fibric-worker_0"]
