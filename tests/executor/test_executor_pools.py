"""The whole loop names its threads: nothing of Fibric's runs on asyncio's default executor.

The system is built as `fibric serve` builds it (fibric.system), and the
server's event loop is given a default executor that refuses every job. An
event is routed to the ship-risk operator, its plan approved, the tools
called through MCP, receipts written and a webhook delivered to a receiver
on loopback: if any of that hopped to the default executor, it would fail.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orders_system
from executor_support import EXAMPLE_EVENT, running

from fibric import store, trust

WAIT = 60.0


class Refusing(concurrent.futures.ThreadPoolExecutor):
    """A default executor that records and refuses every job (asyncio insists on a thread pool)."""

    def __init__(self) -> None:
        super().__init__(1)
        self.refused: list[str] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        self.refused.append(repr(fn))
        raise RuntimeError(f"asyncio's default executor was asked to run {fn!r}")


class RefuseTheDefaultExecutor:
    """A controller service, started first, that installs `Refusing` on the server's loop."""

    def __init__(self, executor: Refusing) -> None:
        self.executor = executor

    async def start(self) -> None:
        asyncio.get_running_loop().set_default_executor(self.executor)

    async def stop(self) -> None: ...


class Receiver:
    """A webhook receiver on loopback that records every body it is sent."""

    def __init__(self) -> None:
        bodies = self.bodies = []  # type: list[bytes]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def until(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def test_the_loop_runs_without_the_default_executor(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path
) -> None:
    refusing, receiver = Refusing(), Receiver()
    boundary = orders_system.orders_boundary(tmp_path / "orders.db", egress=trust.Egress.parse(["127.0.0.1"]))
    with contextlib.closing(receiver), running(
            state, tenant, tmp_path, routing=True, boundary=boundary,
            services=[RefuseTheDefaultExecutor(refusing)]) as fibric, fibric.client() as c:
        hook = c.post("/v1/webhooks", json={"url": receiver.url, "events": ["receipt.created"]})
        assert hook.status_code == 201, hook.text
        assert c.post("/v1/events", json=EXAMPLE_EVENT).status_code == 202
        plan = until(lambda: c.get("/v1/plans", params={"status": "proposed"}).json()["data"], "a plan")[0]
        approved = c.post(f"/v1/plans/{plan['id']}/approve", json={"approver": "ops@acme.com"})
        assert approved.status_code == 200, approved.text
        assert {r["outcome"] for r in approved.json()["results"]} == {"applied"}
        until(lambda: len(receiver.bodies) >= 2, "both receipts delivered")
        names = {t.name.rsplit("_", 1)[0] for t in threading.enumerate()}
    assert refusing.refused == []
    assert {"fibric-executor", "fibric-delivery", "fibric-controller"} <= names
