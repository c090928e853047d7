"""Fixtures for the run tests: the embedded policy engine, a ledger, and a live app per backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
from runs_support import CONFIG, Live, TestClient, live

from fibric import policies, store
from fibric.api import create_app
from fibric.store import receipt_store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def engine() -> Iterator[policies.Engine]:
    opened = policies.open_engine("embedded", timeout=5.0)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def harness(state: store.StateStore, ledger: receipt_store.Ledger, engine: policies.Engine) -> Live:
    return live(state, ledger, engine)


@pytest.fixture
def make_app_without_router(
    state: store.StateStore, tenant: store.Tenant, ledger: receipt_store.Ledger
) -> Callable[[], AbstractContextManager[TestClient]]:
    """The API alone, as a process without a controller serves it: events are stored, never routed."""

    @contextmanager
    def make() -> Iterator[TestClient]:
        _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
        app = create_app(CONFIG, state, None, receipts=ledger)
        with TestClient(app, headers={"Authorization": f"Bearer {secret}"}) as client:
            yield client

    return make
