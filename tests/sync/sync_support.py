"""A served specs folder for the sync tests: the real API on loopback, and the real folder watcher.

The watcher runs on its own event loop in a thread, as `fibric serve --watch`
runs it beside the server; both share one store (SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from click.testing import CliRunner, Result

from fibric import cli, store
from fibric.controller import watch

SET = "serve"
T = TypeVar("T")

POLICY = """\
apiVersion: fibric.io/v1
kind: Policy
metadata: {name: guard}
spec:
  rego: |
    package fibric.guard

    default decision := {"decision": "BLOCK"}
"""
CONNECTOR = """\
apiVersion: fibric.io/v1
kind: Connector
metadata: {name: magento}
spec:
  transport:
    http: {url: 'https://orders.example/mcp'}
  capabilities:
    orders.hold: orders.hold
"""
OPERATOR = """\
apiVersion: fibric.io/v1
kind: Operator
metadata: {name: ship-risk}
spec:
  capabilities: [orders.hold]
  policy: guard
"""
# A field the Operator spec does not have, on line 7: the error must say operator.yaml:7.
BAD_OPERATOR = OPERATOR + "  colour: blue\n"


def write_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "policy.yaml").write_text(POLICY)
    (folder / "connector.yaml").write_text(CONNECTOR)
    (folder / "operator.yaml").write_text(OPERATOR)
    return folder


@contextmanager
def watching(state: store.StateStore, tenant: store.Tenant, folder: Path, *, self_heal: bool = False
             ) -> Iterator[None]:
    """`watch_folder` on its own loop in a thread, checking every 200 ms, until the block ends."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            loop.run_until_complete(watch.watch_folder(
                state, tenant.id, folder, SET, lambda _: None, stop,
                debounce_ms=100, idle_check_ms=200, self_heal=self_heal))
        except BaseException as e:  # reported by the test, not lost in the thread
            failed.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()
    assert not thread.is_alive(), "the watcher did not stop"
    assert not failed, failed


def eventually(check: Callable[[], T | None], what: str, timeout: float = 15.0) -> T:
    """Poll `check` until it returns something truthy (the watcher works on its own time)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def fibric(args: list[str], env: dict[str, str]) -> Result:
    """The `fibric` command in-process against the live server."""
    base: dict[str, str | None] = {"FIBRIC_DATA_DIR": None, "FIBRIC_STORE": None, "FIBRIC_TIMEOUT": None}
    return CliRunner().invoke(cli.cli, args, env={**base, **env}, catch_exceptions=False)


def condition(obj: dict[str, Any], type: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("conditions", []) if c["type"] == type), None)
