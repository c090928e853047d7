"""Helpers for the run tests: the example specs, a live router, bounded waits on the store.

Everything is real: the example ship-risk operator with the `rules` model,
its Rego policy on the embedded engine, the store on each backend, the API
app with the controller running the router in its lifespan.
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fibric import policies, settings, specs, store
from fibric.api import create_app
from fibric.controller import applier, decide, event_routing, loop, operator_runs, reconcile
from fibric.store import receipt_store, run_store

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "specs"
WAIT = 60.0  # upper bound for work to settle on a loaded CI machine
AT_RISK = {"carrier_scanned": False, "status": "open"}  # the example rule's `when` is true
CONFIG = settings.Settings(rate_limits=settings.RateLimitSettings(events_per_minute=1_000_000,
                                                                   reads_per_minute=1_000_000))


def example_specs(*names: str) -> list[specs.Loaded]:
    """The example policy and ship-risk operator (its `rules` model), files inlined like the CLI does."""
    files = [EXAMPLES / n for n in (names or ("policies.yaml", "operators.yaml"))]
    return [specs.resolve(item) for item in specs.load_paths(files)]


def apply_examples(state: store.StateStore, tenant_id: str) -> store.StoredObject:
    """Apply the example policy and operator; the operator as stored."""
    applier.apply(state, tenant_id, example_specs())
    return state.get_object(tenant_id, "Operator", "ship-risk")


def apply_yaml(state: store.StateStore, tenant_id: str, text: str) -> applier.ApplyResult:
    return applier.apply(state, tenant_id, specs.load_text(text, "test.yaml"))


def wait_for(check: Callable[[], Any], timeout: float = WAIT, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def settled(state: store.StateStore) -> bool:
    """Every stored event routed, every queued event consumed, no run in progress."""
    with state.backend.transaction(write=False) as cur:
        cur.execute("SELECT COUNT(*) FROM events WHERE routed_at IS NULL")
        unrouted = cur.fetchone()[0]
        cur.execute("SELECT COUNT(*) FROM run_queue")
        queued = cur.fetchone()[0]
        cur.execute("SELECT COUNT(*) FROM runs WHERE status = 'running'")
        running = cur.fetchone()[0]
    return unrouted == 0 and queued == 0 and running == 0


def settle(state: store.StateStore, timeout: float = WAIT) -> None:
    wait_for(lambda: settled(state), timeout, "routing and runs to settle")


def all_runs(state: store.StateStore, tenant_id: str) -> list[run_store.Run]:
    """Every run of the tenant, oldest first."""
    return list(reversed(run_store.list_runs(state, tenant_id)))


def event(client: TestClient, key: str, entity: str = "order:SO-10884", type: str = "order.updated",
          data: dict[str, Any] | None = None) -> dict[str, Any]:
    response = client.post("/v1/events", json={"type": type, "entity_key": entity, "idempotency_key": key,
                                               "data": AT_RISK if data is None else data})
    assert response.status_code in (200, 202), response.text
    body: dict[str, Any] = response.json()
    return body


@dataclass
class Live:
    """The API with a controller whose only service is the event router."""

    app: Any
    router: event_routing.Router
    runner: operator_runs.Runner

    @contextmanager
    def client(self, state: store.StateStore, tenant: store.Tenant) -> Iterator[TestClient]:
        """An all-scopes client of `tenant`, with the app's lifespan (and so the router) running."""
        with self.plain_client(state, tenant) as c:
            yield c

    def plain_client(self, state: store.StateStore, tenant: store.Tenant) -> TestClient:
        """A second client of the same app: used outside `with`, it starts no second lifespan."""
        _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
        return TestClient(self.app, headers={"Authorization": f"Bearer {secret}"})


def live(state: store.StateStore, ledger: receipt_store.Ledger, engine: policies.Engine, *,
         llm: settings.LlmSettings | None = None, **router: Any) -> Live:
    """`llm` are the installation's LLM routes (keys in no variable: keyless routes only)."""
    decider = decide.Decider(state, engine, reconcile.CompileCache())
    runner = operator_runs.Runner(state, decider, ledger=ledger, llm=llm or settings.LlmSettings(),
                                  environ={})
    event_router = event_routing.Router(state, runner, poll_seconds=router.pop("poll_seconds", 0.2), **router)
    controller = loop.Controller(state, settings.ControllerSettings(resync_seconds=3600),
                                 policy_engine=engine, services=[event_router])
    app = create_app(CONFIG, state, controller, receipts=ledger)
    app.state.event_router = event_router
    return Live(app, event_router, runner)


def assert_single_flight(runs: list[run_store.Run]) -> None:
    """No two runs of one (operator, entity) were ever in progress at once."""
    by_key: dict[tuple[str, str], list[run_store.Run]] = {}
    for run in runs:
        by_key.setdefault((run.operator_id, run.entity_key), []).append(run)
    for key, group in by_key.items():
        group.sort(key=lambda r: r.started_at)
        for earlier, later in itertools.pairwise(group):
            assert earlier.finished_at is not None, f"run {earlier.id} never finished"
            assert later.started_at >= earlier.finished_at, f"{earlier.id} and {later.id} of {key} overlap"
