"""Fixtures for the trust-boundary tests; `state`, `tenant` and `ledger` come from tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fibric import store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sqlite_state(tmp_path: Path) -> Iterator[store.StateStore]:
    state = store.open_store(tmp_path / "sqlite-data")
    try:
        yield state
    finally:
        state.close()
