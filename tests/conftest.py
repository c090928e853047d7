"""Fixtures shared by the whole suite.

`state` runs a test once per store backend: SQLite always, PostgreSQL when
FIBRIC_TEST_POSTGRES_URL is set (each test gets its own schema, dropped after).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import duckdb  # noqa: F401  first: DuckDB loaded after regopy aborts on connect (test_native_libraries.py)
import pytest

from fibric import store
from fibric.store import receipt_store, sealed

POSTGRES_URL = os.environ.get("FIBRIC_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", "postgresql"]


def postgres_schema_url(base_url: str, schema: str) -> str:
    """A URL whose connections use `schema` first on the search path."""
    sep = "&" if "?" in base_url else "?"
    return f"{base_url}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=BACKENDS)
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where a fresh, empty store lives: a test using it runs once per backend."""
    if request.param == "sqlite":
        yield str(tmp_path / "data")
        return
    if not POSTGRES_URL:
        pytest.skip("FIBRIC_TEST_POSTGRES_URL is not set; PostgreSQL store tests skipped")
    import psycopg

    schema = "fibric_test_" + secrets.token_hex(6)
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield postgres_schema_url(POSTGRES_URL, schema)
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def state(store_location: str) -> Iterator[store.StateStore]:
    """A migrated, empty state store on each backend."""
    opened = store.open_store(store_location)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def tenant(state: store.StateStore) -> store.Tenant:
    return state.create_tenant("acme", "rs_fibric")


@pytest.fixture
def other_tenant(state: store.StateStore) -> store.Tenant:
    return state.create_tenant("globex", "rs_fibric")


@pytest.fixture
def ledger(state: store.StateStore) -> receipt_store.StoreLedger:
    """The receipts of record of the test's store."""
    return receipt_store.StoreLedger(state)


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[sealed.SealedLedger]:
    """A sealed ledger (DuckLake) of its own for each test."""
    opened = sealed.SealedLedger(tmp_path / "lake")
    try:
        yield opened
    finally:
        opened.close()
