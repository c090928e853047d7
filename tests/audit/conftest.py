"""Fixtures for the audit tests: a data dir with a state store, two tenants, both ledgers, and the API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fibric import settings, store
from fibric.api import create_app
from fibric.store import receipt_store, sealed


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    return folder


@pytest.fixture
def local_state(data_dir: Path) -> Iterator[store.StateStore]:
    """The data dir's SQLite state store, with tenants acme and globex."""
    opened = store.open_store(settings.StoreSettings(data_dir=data_dir).location)
    opened.create_tenant("acme", "rs_fibric")
    opened.create_tenant("globex", "rs_fibric")
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def acme(local_state: store.StateStore) -> store.Tenant:
    return local_state.get_tenant("acme")


@pytest.fixture
def globex(local_state: store.StateStore) -> store.Tenant:
    return local_state.get_tenant("globex")


@pytest.fixture
def record(local_state: store.StateStore) -> receipt_store.StoreLedger:
    """The data dir's receipts of record."""
    return receipt_store.StoreLedger(local_state)


@pytest.fixture
def data_lake(data_dir: Path) -> Iterator[sealed.SealedLedger]:
    """The data dir's sealed ledger, held by this process as `fibric serve` holds it."""
    opened = sealed.SealedLedger(data_dir)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def app(
    local_state: store.StateStore, record: receipt_store.StoreLedger, data_lake: sealed.SealedLedger
) -> Any:
    return create_app(settings.Settings(), local_state, receipts=record, sealed=data_lake)
