"""`fibric serve` as shipped: events become plans, and events stored while it was down are routed at start.

The example GitOps folder (ship-risk operator with the `rules` model, its
policy, the Magento connector running the example order server over stdio)
is served by a real `fibric serve` process on loopback.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from runs_support import AT_RISK, ROOT, wait_for

from fibric import store
from fibric.store import event_store

START_TIMEOUT = 60.0


class Serve:
    """One `fibric serve` process; its output is collected by a reader thread."""

    def __init__(self, workdir: Path) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", FIBRIC_RATE_LIMIT_EVENTS="100000")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fibric.cli", "serve", "--port", "0", "--data-dir", "data",
             "--specs", "examples/specs", "--connector-catalog", "examples/catalog.yaml"],
            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        found = wait_for(lambda: re.search(r"running on (http://127\.0\.0\.1:\d+)", self.text())
                         or self.process.poll() is not None, START_TIMEOUT, "fibric serve to start")
        if not isinstance(found, re.Match):
            raise AssertionError(f"fibric serve did not start:\n{self.text()}")
        self.url = found.group(1)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(timeout=10)
        self.reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A copy of the example repo: its catalog's paths are relative to where serve runs."""
    for part in ("specs", "policies", "mcp"):
        shutil.copytree(ROOT / "examples" / part, tmp_path / "examples" / part)
    shutil.copy(ROOT / "examples" / "catalog.yaml", tmp_path / "examples" / "catalog.yaml")
    (tmp_path / "examples" / "specs" / "webhooks.yaml").unlink()  # no deliveries to the internet
    return tmp_path


@pytest.fixture
def serving(workdir: Path) -> Iterator[list[Serve]]:
    started: list[Serve] = []
    yield started
    for served in started:
        served.stop()


def test_serve_turns_events_into_plans_and_routes_what_was_stored_while_it_was_down(
    workdir: Path, serving: list[Serve]
) -> None:
    first = Serve(workdir)
    serving.append(first)
    key = re.search(r"FIBRIC_KEY=(sk_live_[0-9a-f]+)", first.text())
    assert key is not None
    auth = {"Authorization": f"Bearer {key.group(1)}"}
    with httpx.Client(base_url=first.url, headers=auth, timeout=30) as api:
        api.post("/v1/events", json={"type": "order.updated", "entity_key": "order:SO-10884",
                                     "idempotency_key": "e-1", "data": AT_RISK}).raise_for_status()
        [summary] = wait_for(lambda: api.get("/v1/plans").json()["data"], what="a plan")
        plan = api.get(f"/v1/plans/{summary['id']}").json()
        [operator] = api.get("/v1/operators").json()["data"]
    assert plan["proposed_by"] == "rules"
    assert [(a["capability"], a["decision"]) for a in plan["actions"]] == [
        ("orders.hold", "ALLOW"), ("orders.notify", "ALERT")]
    assert operator["last_run"]["proposed"] == 2 and operator["last_run"]["status"] == "succeeded"
    assert first.stop() == 0

    # While no server runs, an event lands in the store (as one stored just before a crash would).
    state = store.open_store(workdir / "data")
    try:
        tenant = state.get_tenant("default")
        event_store.ingest(state, reseller_id=tenant.reseller_id, tenant_id=tenant.id, type="order.updated",
                           entity_key="order:SO-10886", idempotency_key="while-down", data=AT_RISK)
    finally:
        state.close()

    second = Serve(workdir)
    serving.append(second)
    with httpx.Client(base_url=second.url, headers=auth, timeout=30) as api:
        wait_for(lambda: len(api.get("/v1/plans").json()["data"]) == 2, what="the stored event's plan")
        runs = api.get("/v1/runs").json()["data"]
    assert {r["entity_key"] for r in runs} == {"order:SO-10884", "order:SO-10886"}
