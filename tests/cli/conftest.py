"""Fixtures for the CLI tests: a real API server over a real store (both backends) and a real key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import write_repo
from live_server import serving

from fibric import settings, store
from fibric.api import app as api_app


@pytest.fixture
def api_url(state: store.StateStore) -> Iterator[str]:
    """Base URL of the v1 API served by uvicorn on a free loopback port."""
    with serving(api_app.create_app(settings.Settings(), state)) as url:
        yield url


@pytest.fixture
def api_env(api_url: str, state: store.StateStore, tenant: store.Tenant) -> dict[str, str | None]:
    """FIBRIC_URL and FIBRIC_KEY (all scopes, tenant acme) for the CLI."""
    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    return {"FIBRIC_URL": api_url, "FIBRIC_KEY": secret}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A small GitOps repo on disk; the fixture is its specs folder."""
    return write_repo(tmp_path / "repo")
