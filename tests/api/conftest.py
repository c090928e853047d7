"""Fixtures for the API tests: a real app over a real store (both backends), real keys.

The only double is the controller, which is our own boundary: a recorder of
what the API told it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from api_support import MAX_BODY, Recorder, TestClient

from fibric import settings, store
from fibric.api import create_app
from fibric.store import receipt_store

ALL_SCOPES = frozenset(store.SCOPES)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def app(state: store.StateStore, recorder: Recorder, ledger: receipt_store.Ledger) -> Any:
    config = settings.Settings(server=settings.ServerSettings(max_body_bytes=MAX_BODY))
    return create_app(config, state, recorder, receipts=ledger)


@pytest.fixture
def make_client(app: Any, state: store.StateStore) -> Callable[..., TestClient]:
    """A client authenticated with a fresh key of `tenant` carrying `scopes`."""

    def make(tenant: store.Tenant, scopes: frozenset[str] = ALL_SCOPES, **kwargs: Any) -> TestClient:
        _, secret = state.create_api_key(tenant.id, scopes)
        return TestClient(app, headers={"Authorization": f"Bearer {secret}"}, **kwargs)

    return make


@pytest.fixture
def client(app: Any, state: store.StateStore, tenant: store.Tenant) -> Iterator[TestClient]:
    """An all-scopes client of the `tenant` (acme), with the app's lifespan running."""
    _, secret = state.create_api_key(tenant.id, ALL_SCOPES)
    with TestClient(app, headers={"Authorization": f"Bearer {secret}"}) as c:
        yield c


@pytest.fixture
def other_client(
    make_client: Callable[..., TestClient], other_tenant: store.Tenant
) -> TestClient:
    """An all-scopes client of another tenant (globex)."""
    return make_client(other_tenant)
