"""Schema migrations: every process runs them on start, so they must be idempotent and race-safe."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from store_support import Raw, is_postgres

from fibric import store
from fibric.store import migrations

ALL_VERSIONS = [version for version, _, _ in migrations.MIGRATIONS]


def test_a_fresh_store_is_at_the_latest_version(state: store.StateStore, raw: Raw) -> None:
    assert state.schema_version() == migrations.LATEST
    assert [r[0] for r in raw("SELECT version FROM schema_migrations ORDER BY version")] == ALL_VERSIONS
    # The tables the rest of Fibric relies on exist and are empty.
    for table in ("tenants", "api_keys", "objects"):
        assert raw(f"SELECT COUNT(*) FROM {table}") == [(0,)]


def test_reopening_applies_nothing_twice_and_keeps_the_data(
    state: store.StateStore, store_location: str, raw: Raw
) -> None:
    tenant = state.create_tenant("acme", "rs_fibric")
    recorded = raw("SELECT version, applied_at FROM schema_migrations ORDER BY version")

    again = store.open_store(store_location)
    try:
        assert again.migrate() == []
        assert again.schema_version() == migrations.LATEST
        assert again.get_tenant("acme") == tenant
    finally:
        again.close()
    assert raw("SELECT version, applied_at FROM schema_migrations ORDER BY version") == recorded


def fresh_locations(store_location: str, count: int) -> list[str]:
    """Several never-opened locations for SQLite (its race is rare per try); one for PostgreSQL."""
    if is_postgres(store_location):
        return [store_location]
    return [str(Path(store_location) / f"fresh-{n}") for n in range(count)]


@pytest.mark.parametrize("replicas", [2, 4])
def test_stores_opening_one_fresh_location_at_once_all_succeed(store_location: str, replicas: int) -> None:
    # Replicas (or `fibric serve` and `fibric admin`) starting together all migrate
    # on start: none may fail, and no migration may be recorded twice.
    for location in fresh_locations(store_location, 10):
        barrier = threading.Barrier(replicas)

        def start(location: str = location, barrier: threading.Barrier = barrier) -> list[int]:
            barrier.wait(timeout=10)
            opened = store.open_store(location)
            try:
                assert opened.schema_version() == migrations.LATEST
                with opened.backend.transaction(write=False) as cur:
                    cur.execute("SELECT version FROM schema_migrations ORDER BY version")
                    return [r[0] for r in cur.fetchall()]
            finally:
                opened.close()

        with ThreadPoolExecutor(replicas) as pool:
            recorded = [f.result(timeout=30) for f in [pool.submit(start) for _ in range(replicas)]]
        assert recorded == [ALL_VERSIONS] * replicas
