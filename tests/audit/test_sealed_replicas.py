"""Replicas share one sealed ledger: DuckLake with its catalog in PostgreSQL, sealed by one elected replica.

Two replicas here are two Sealers, each with its own data dir and its own
DuckLake connection to the shared catalog and data path, over one PostgreSQL
state store: what two `fibric serve` processes configured with
FIBRIC_LEDGER_CATALOG / _DATA_PATH / _SCHEMA hold.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from audit_support import record_some

from fibric import errors, settings, store
from fibric.controller import sealer
from fibric.store import audit_sql, leadership, receipt_store, sealed

POSTGRES_URL = os.environ.get("FIBRIC_TEST_POSTGRES_URL")
pytestmark = [pytest.mark.anyio,
              pytest.mark.skipif(not POSTGRES_URL, reason="FIBRIC_TEST_POSTGRES_URL is not set")]


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[settings.StoreSettings]:
    """The ledger settings every replica shares: a catalog schema of its own, one data path."""
    import psycopg

    assert POSTGRES_URL is not None
    schema = "fibric_lake_" + secrets.token_hex(6)
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield settings.StoreSettings(ledger_catalog="postgres:" + POSTGRES_URL,
                                     ledger_data_path=str(tmp_path / "lake"), ledger_schema=schema)
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def replica(
    shared: settings.StoreSettings, record: receipt_store.StoreLedger, data_dir: Path
) -> sealer.Sealer:
    """One replica's sealer, as fibric.system builds it."""
    lake = sealed.open_for(dataclasses.replace(shared, data_dir=data_dir))
    return sealer.Sealer(record, lake, leader=leadership.Leadership(
        lake.catalog.removeprefix("postgres:"), f"fibric-sealer:{lake.schema}"))


def sealed_seqs(lake: sealed.SealedLedger) -> list[int]:
    conn = audit_sql.over_files(lake.files(None))
    try:
        return [int(r[0]) for r in conn.execute("SELECT seq FROM receipts ORDER BY seq").fetchall()]
    finally:
        conn.close()


async def test_one_replica_seals_and_another_takes_over_when_its_session_ends(
    state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant, tmp_path: Path,
    shared: settings.StoreSettings,
) -> None:
    if state.dialect != "postgresql":
        pytest.skip("replicas share a PostgreSQL store")
    record = receipt_store.StoreLedger(state)
    a, b = replica(shared, record, tmp_path / "a"), replica(shared, record, tmp_path / "b")
    try:
        written = record_some(record, [tenant.id, other_tenant.id], 10)
        assert (await a.seal_once(), await b.seal_once()) == (20, 0)  # a owns it; b does nothing
        more = record_some(record, [tenant.id, other_tenant.id], 5, start=10)
        assert await b.seal_once() == 0

        import psycopg  # a's session dies, as it does when its process is killed

        assert a.leader is not None and a.leader._conn is not None
        with psycopg.connect(POSTGRES_URL or "", autocommit=True) as admin:
            # With a timeout it returns once the backend is gone (and its lock with it), not at the signal.
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", (a.leader._conn.info.backend_pid,))
        assert await b.seal_once() == 10  # b takes over from the lake's marks
        assert await a.seal_once() == 0  # a finds it lost, and does not seal beside b

        every = sorted(r.seq for batch in (written, more) for rs in batch.values() for r in rs)
        assert sealed_seqs(a.lake) == every == sealed_seqs(b.lake)  # each once, read from either replica
    finally:
        for replica_sealer in (a, b):
            await replica_sealer.stop()
            replica_sealer.lake.close()


def test_a_shared_catalog_needs_a_shared_data_path(shared: settings.StoreSettings) -> None:
    with pytest.raises(errors.PermanentError, match="FIBRIC_LEDGER_DATA_PATH"):
        sealed.open_for(dataclasses.replace(shared, ledger_data_path=None))
