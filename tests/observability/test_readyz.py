"""GET /readyz: ready while the store, the sealed ledger and the policy engine answer; 503 naming what fails.

A real app over a real store (each backend), a real sealed ledger and the
real embedded Rego engine. /healthz stays liveness: it answers 200 whatever
is down.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from observability_support import TestClient, wait_for

from fibric import policies, settings, store
from fibric.api import create_app


@pytest.fixture
def engine() -> Iterator[policies.Engine]:
    opened = policies.open_engine("embedded", timeout=5.0)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def app(state: store.StateStore, engine: policies.Engine, tmp_path: Path) -> Any:
    config = settings.Settings(store=settings.StoreSettings(data_dir=tmp_path / "ledger"))
    return create_app(config, state, engine=engine)


def ready(client: TestClient) -> Any:
    """The first answer that is not a cold start's (the first probe may wait on the policy's compile)."""
    return wait_for(lambda: answered(client.get("/readyz")), "a readiness answer")


def answered(response: Any) -> Any:
    return None if "timed out" in response.text else response


def test_ready_when_the_store_ledger_and_policy_engine_answer(app: Any) -> None:
    with TestClient(app) as client:  # no key: probes are unauthenticated
        response = ready(client)
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "ready",
                                   "checks": {"store": "ok", "ledger": "ok", "policy": "ok"}}
        assert client.get("/healthz").json() == {"status": "ok"}


def test_not_ready_names_the_store_when_it_is_unreachable(
    app: Any, state: store.StateStore, store_location: str
) -> None:
    with TestClient(app) as client:
        assert ready(client).status_code == 200
        state.close()
        if state.dialect == "sqlite":  # a closed SQLite store reopens its file: take the file away too
            shutil.rmtree(store_location)

        response = client.get("/readyz")

        assert response.status_code == 503, response.text
        body = response.json()
        assert body["status"] == "not_ready" and body["failing"] == ["store"]
        assert body["checks"] == {"store": "failed", "ledger": "ok", "policy": "ok"}
        assert store_location not in response.text  # why is logged, never told to the caller
        assert client.get("/healthz").status_code == 200  # liveness: the process still answers


def test_not_ready_names_the_policy_engine_when_it_is_down(app: Any, engine: policies.Engine,
                                                           state: store.StateStore) -> None:
    if state.dialect != "sqlite":
        pytest.skip("the engine's check does not depend on the store")
    with TestClient(app) as client:
        assert ready(client).status_code == 200
        engine.close()

        response = client.get("/readyz")

        assert response.status_code == 503
        assert response.json()["failing"] == ["policy"]
        assert response.json()["checks"]["policy"].startswith("fail-closed:")
