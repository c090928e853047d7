"""Fixtures for the sync tests: the v1 API served on loopback over a real store, and keys to call it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import serving
from sync_support import write_folder

from fibric import client, settings, store
from fibric.api import app as api_app


@pytest.fixture
def api_url(state: store.StateStore) -> Iterator[str]:
    with serving(api_app.create_app(settings.Settings(), state)) as url:
        yield url


@pytest.fixture
def env(api_url: str, state: store.StateStore, tenant: store.Tenant) -> dict[str, str]:
    """FIBRIC_URL and FIBRIC_KEY (all scopes) of the tenant that owns the folder."""
    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    return {"FIBRIC_URL": api_url, "FIBRIC_KEY": secret}


@pytest.fixture
def api(env: dict[str, str]) -> Iterator[client.Client]:
    with client.Client(env["FIBRIC_URL"], env["FIBRIC_KEY"], retries=0) as made:
        yield made


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "specs")
