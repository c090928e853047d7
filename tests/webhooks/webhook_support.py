"""A real HTTP receiver on loopback, a movable clock, and shortcuts to a webhook under test."""

from __future__ import annotations

import base64
import dataclasses
import os
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fibric import settings, specs, store, trust
from fibric.api import create_app
from fibric.controller import applier, dispatch
from fibric.store import secretbox

with warnings.catch_warnings():
    # Starlette asks for httpx2 instead of httpx; the client behaves the same.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

KEY = base64.b64encode(os.urandom(32)).decode()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.perf_counter() when the body was read


@dataclass
class Receiver:
    """Answers each POST with the next scripted (status, delay seconds, body), then 200."""

    url: str
    script: list[tuple[int, float, bytes]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.arrived = threading.Condition(self.lock)

    def answer(self, *answers: int | tuple[int, float] | tuple[int, float, bytes]) -> None:
        with self.lock:
            for a in answers:
                if isinstance(a, int):
                    self.script.append((a, 0.0, b""))
                elif len(a) == 2:
                    self.script.append((a[0], a[1], b""))
                else:
                    self.script.append(a)  # type: ignore[arg-type]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.received) >= count, timeout)
            return list(self.received)


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with receiver.lock:
                status, delay, payload = receiver.script.pop(0) if receiver.script else (200, 0.0, b"ok")
                receiver.received.append(Received(self.path, dict(self.headers.items()), body,
                                                  time.perf_counter()))
                receiver.arrived.notify_all()
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                if status in (301, 302, 307, 308):
                    self.send_header("Location", "/redirected")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the dispatcher gave up waiting (a timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 256  # the dispatcher opens many connections at once
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    receiver = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hooks")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class Clock:
    """The dispatcher's injectable clock: tests move it instead of waiting out a backoff."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    def pass_wall_clock(self) -> None:
        """Move past the wall clock, which the API stamps deliveries with however long the test took."""
        self.now = max(self.now, datetime.now(UTC)) + timedelta(seconds=1)


def dev_settings(**changes: Any) -> settings.WebhookSettings:
    """Delivery settings that allow the loopback receiver (the development setting), short timeouts."""
    values: dict[str, Any] = {"allow_http_and_private": True, "secret_key": KEY,
                              "connect_timeout_seconds": 2.0, "read_timeout_seconds": 2.0,
                              "poll_seconds": 0.05}
    values.update(changes)
    return settings.WebhookSettings(**values)


def box() -> secretbox.SecretBox:
    return secretbox.SecretBox(key=KEY)


def create_webhook(
    state: store.StateStore, tenant: store.Tenant, url: str, *,
    name: str = "ops-channel", events: tuple[str, ...] = ("plan.proposed",), **spec: Any,
) -> tuple[store.StoredObject, str | None]:
    """Apply one Webhook spec (development rules: http and loopback allowed); returns it and its secret.

    A tenant applies it, unless it reads a server variable (`secret_env`), which only the installation may.
    """
    document = specs.build("Webhook", name, {"url": url, "events": list(events), **spec})
    origin = trust.Origin.INSTALLATION if "secret_env" in spec else trust.Origin.TENANT
    result = applier.apply(state, tenant.id, [specs.Loaded(document, specs.Source(file=""))], origin=origin,
                           options=applier.Options(trust.Boundary(webhook_egress=trust.ANYWHERE), box()))
    return state.get_object(tenant.id, "Webhook", name), result.changes[0].signing_secret


def dispatcher(state: store.StateStore, clock: Clock | None = None, **changes: Any) -> dispatch.Dispatcher:
    import random

    return dispatch.Dispatcher(state, dev_settings(**changes), box(), clock=clock or Clock(),
                               rng=random.Random(7), environ={})


@asynccontextmanager
async def dispatching(state: store.StateStore, clock: Clock | None = None,
                      **changes: Any) -> AsyncIterator[dispatch.Dispatcher]:
    """A dispatcher as `dispatcher` makes it, closed when the block ends."""
    service = dispatcher(state, clock, **changes)
    try:
        yield service
    finally:
        await service.aclose()


class _Controller:
    """The API's controller hook, recording what it was told (the API tests' Recorder)."""

    def __init__(self) -> None:
        self.notified: list[tuple[str, str, str]] = []

    def notify(self, tenant_id: str, kind: str, name: str) -> None:
        self.notified.append((tenant_id, kind, name))

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@contextmanager
def client_for(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path, config: settings.Settings
) -> Iterator[TestClient]:
    """An all-scopes API client of `tenant` over a real app with `config`."""
    config = dataclasses.replace(config, store=settings.StoreSettings(data_dir=tmp_path / "data"))
    app = create_app(config, state, _Controller())
    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    with TestClient(app, headers={"Authorization": f"Bearer {secret}"}) as client:
        yield client
