"""workers.run and run_slow: blocking route work in worker threads, with the caller's context, outlasting
cancellation, and slow routes kept off the quick threads."""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from anyio import to_thread
from api_support import TestClient, policy_doc
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from fibric import settings, store
from fibric.api import create_app, routes, routing, workers
from fibric.store import receipt_store

REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")


RUNNERS = pytest.mark.parametrize("run", [workers.run, workers.run_slow], ids=["quick", "slow"])


@RUNNERS
def test_the_work_runs_off_the_event_loop_with_the_callers_context(run: Any) -> None:
    async def main() -> tuple[str, bool]:
        REQUEST.set("req_1")
        loop_thread = threading.get_ident()
        return await run(lambda: (REQUEST.get(), threading.get_ident() != loop_thread))

    assert asyncio.run(main()) == ("req_1", True)


@RUNNERS
def test_errors_reach_the_caller(run: Any) -> None:
    def fail() -> None:
        raise ValueError("no such row")

    with pytest.raises(ValueError, match="no such row"):
        asyncio.run(run(fail))


@RUNNERS
def test_a_cancelled_caller_waits_for_the_thread_to_finish(run: Any) -> None:
    started = threading.Event()
    finished: list[float] = []

    def write() -> None:
        started.set()
        time.sleep(0.3)
        finished.append(time.monotonic())

    async def main() -> float:
        task = asyncio.create_task(run(write))
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic()

    cancelled_at = asyncio.run(main())
    assert finished and finished[0] <= cancelled_at  # the write was over before the cancel went on


@RUNNERS
def test_on_an_apps_pools_a_cancelled_caller_waits_for_the_thread_to_finish(run: Any) -> None:
    # The same guarantee on the app's own quick and slow pools (threads.Pool.run), under a cancel
    # that is delivered again while the caller waits (as anyio's cancel scopes do).
    started = threading.Event()
    finished: list[tuple[float, str]] = []

    def write() -> None:
        started.set()
        time.sleep(0.3)
        finished.append((time.monotonic(), threading.current_thread().name))

    async def main() -> float:
        with workers.quick_threads(1, slow=1) as pools:
            workers.QUICK.set(pools)
            task = asyncio.create_task(run(write))
            await asyncio.to_thread(started.wait, 5)
            task.cancel()
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return time.monotonic()

    cancelled_at = asyncio.run(main())
    assert finished and finished[0][0] <= cancelled_at
    assert finished[0][1] == ("fibric-worker_0" if run is workers.run else "fibric-slow_0")


@RUNNERS
def test_outside_an_app_the_work_never_runs_on_the_loops_default_executor(run: Any) -> None:
    class Refusing(ThreadPoolExecutor):
        def submit(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the loop's default executor was used")

    async def main() -> str:
        asyncio.get_running_loop().set_default_executor(Refusing(1))
        return await run(lambda: threading.current_thread().name)

    assert asyncio.run(main()).startswith("fibric-")


def test_worker_threads_come_from_the_environment() -> None:
    assert settings.Settings.from_env({"FIBRIC_WORKER_THREADS": "2"}).server.worker_threads == 2
    assert settings.Settings.from_env({}).server.worker_threads is None


def test_the_app_runs_its_routes_on_the_configured_threads(
    state: store.StateStore, ledger: receipt_store.Ledger, tenant: store.Tenant
) -> None:
    _, secret = state.create_api_key(tenant.id, frozenset({"operators:read"}))
    config = settings.Settings(server=settings.ServerSettings(worker_threads=1))
    with TestClient(create_app(config, state, receipts=ledger),
                    headers={"Authorization": f"Bearer {secret}"}) as client:
        for _ in range(3):
            assert client.get("/v1/operators").status_code == 200
        names = [t.name for t in threading.enumerate() if t.name.startswith("fibric-worker")]

    assert names == ["fibric-worker_0"]


def test_the_app_sizes_its_slow_pool_from_the_environment(
    state: store.StateStore, ledger: receipt_store.Ledger, tenant: store.Tenant
) -> None:
    _, secret = state.create_api_key(tenant.id, frozenset({"policies:write", "policies:read"}))
    config = settings.Settings.from_env({"FIBRIC_SLOW_THREADS": "3"})
    app = create_app(config, state, receipts=ledger)
    with TestClient(app, headers={"Authorization": f"Bearer {secret}"}) as client:
        assert client.post("/v1/apply", json={"documents": [policy_doc()]}).status_code == 200  # slow
        threads = app.state.quick_threads
        assert threads.slow.size == 3
        slow = [t.name for t in threading.enumerate() if t.name.startswith("fibric-slow")]
        assert slow == ["fibric-slow_0"]


def test_quick_threads_default_to_one_per_cpu_on_sqlite_and_to_asyncios_on_postgresql() -> None:
    cpus = len(os.sched_getaffinity(0))
    assert workers.default_threads("sqlite") == max(2, cpus)
    assert workers.default_threads("postgresql") == min(32, cpus + 4)


def test_slow_routes_leave_the_quick_threads_free() -> None:
    # One quick thread, three slow requests holding their threads: a quick request still answers,
    # on the app's quick thread.
    started = threading.Semaphore(0)
    release = threading.Event()
    router = APIRouter(route_class=routing.Route)

    @router.get("/slow")
    @routing.slow
    def slow_route() -> dict[str, bool]:
        started.release()
        return {"released": release.wait(10)}

    @router.get("/quick")
    def quick_route() -> dict[str, str]:
        return {"thread": threading.current_thread().name}

    app = FastAPI()
    app.include_router(router)

    async def main() -> tuple[Any, list[int]]:
        transport = httpx.ASGITransport(app=app)
        with workers.quick_threads(1) as executor:
            app.state.quick_threads = executor
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                slow = [asyncio.create_task(client.get("/slow")) for _ in range(3)]
                for _ in slow:
                    assert await asyncio.to_thread(started.acquire, True, 5)
                quick = await asyncio.wait_for(client.get("/quick"), 5)
                release.set()
                return quick.json(), [(await task).status_code for task in slow]

    assert asyncio.run(main()) == ({"thread": "fibric-worker_0"}, [200, 200, 200])


def test_the_routes_that_may_take_seconds_run_on_the_slow_pool() -> None:
    slow = {(method, route.path) for router in routes.ROUTERS for route in router.routes
            if isinstance(route, APIRoute) and routing.is_slow(route.endpoint) for method in route.methods}
    assert slow == {("POST", "/v1/receipts/query"), ("POST", "/v1/audit/snapshot"),
                    ("POST", "/v1/audit/files"), ("POST", "/v1/apply"),
                    ("POST", "/v1/policies/{policy_id}/replay")}  # up to 100k decisions


def test_an_app_leaves_no_worker_threads_behind(
    state: store.StateStore, ledger: receipt_store.Ledger, tenant: store.Tenant
) -> None:
    _, secret = state.create_api_key(tenant.id, frozenset({"operators:read"}))
    with TestClient(create_app(settings.Settings(), state, receipts=ledger),
                    headers={"Authorization": f"Bearer {secret}"}) as client:
        assert client.get("/v1/operators").status_code == 200

    assert not [t for t in threading.enumerate() if t.name.startswith("fibric-worker")]


def test_slow_work_waits_for_the_apps_bounded_slow_pool() -> None:
    # Two slow threads: of four slow calls at once, two run and two wait their turn, on named threads.
    release = threading.Event()
    lock = threading.Lock()
    running: list[str] = []
    most = 0

    def hold() -> str:
        nonlocal most
        with lock:
            running.append(threading.current_thread().name)
            most = max(most, len(running))
        release.wait(10)
        with lock:
            running.remove(threading.current_thread().name)
        return threading.current_thread().name

    async def main() -> tuple[list[str], int]:
        with workers.quick_threads(1, slow=2) as executor:
            workers.QUICK.set(executor)
            calls = [asyncio.create_task(workers.run_slow(hold)) for _ in range(4)]
            deadline = time.monotonic() + 5
            while len(running) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # room for a third, were there a thread for it
            at_once = len(running)
            release.set()
            return list(await asyncio.gather(*calls)), at_once

    names, at_once = asyncio.run(main())

    assert at_once == 2 and most == 2
    assert len(names) == 4 and all(name.startswith("fibric-slow") for name in names), names


def test_the_api_never_waits_for_anyios_thread_pool(
    state: store.StateStore, ledger: receipt_store.Ledger, tenant: store.Tenant
) -> None:
    # anyio's pool, cut to one thread and that one held (a library's blocking call): admission of a
    # key not yet seen, the Idempotency-Key records and slow routes all run on the app's own threads.
    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    app = create_app(settings.Settings(), state, receipts=ledger)
    release = threading.Event()

    async def main() -> list[Any]:
        limiter = to_thread.current_default_thread_limiter()
        limiter.total_tokens = 1
        held = asyncio.ensure_future(to_thread.run_sync(release.wait, 30))
        try:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                             headers={"Authorization": f"Bearer {secret}"}) as client:
                    event = {"type": "order.updated", "entity_key": "order:1", "idempotency_key": "src-1",
                             "data": {}}
                    once = {"Idempotency-Key": "ingest-1"}
                    first = await asyncio.wait_for(client.post("/v1/events", json=event, headers=once), 10)
                    again = await asyncio.wait_for(client.post("/v1/events", json=event, headers=once), 10)
                    applied = client.post("/v1/apply", json={"documents": [policy_doc()]})  # a slow route
                    slow = await asyncio.wait_for(applied, 30)
                    return [first, again, slow, held.done()]
        finally:
            release.set()
            await held

    first, again, slow, was_done = asyncio.run(main())

    assert first.status_code == 202, first.text
    assert (again.status_code, again.headers.get("Idempotent-Replayed")) == (202, "true")
    assert again.json() == first.json()
    assert slow.status_code == 200, slow.text
    assert not was_done  # anyio's one thread was held all along
