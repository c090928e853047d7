"""POST /v1/receipts/query (a tenant's auditor, by API key); /v1/audit/files, /snapshot (the local admin)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import duckdb
import pytest
from audit_support import client_of, new_receipt, seal
from fastapi.testclient import TestClient

from fibric import store
from fibric.store import audit_sql, ledger_access, receipt_store, sealed


def test_a_key_queries_its_tenants_receipts_only(
    app: Any, local_state: store.StateStore, record: receipt_store.StoreLedger,
    data_lake: sealed.SealedLedger,
    acme: store.Tenant, globex: store.Tenant,
) -> None:
    for n in range(3):
        record.append(new_receipt(acme.id, n))
    record.append(new_receipt(globex.id, 9, decision="BLOCK", outcome="refused"))
    seal(record, data_lake)
    with client_of(app, local_state, acme) as client:
        response = client.post("/v1/receipts/query", json={
            "sql": "SELECT tenant_id, decision, count(*) AS n, max(disposed_at) AS last "
                   "FROM receipts GROUP BY ALL"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["object"] == "receipt_query" and body["truncated"] is False and body["row_count"] == 1
        assert [c["name"] for c in body["columns"]] == ["tenant_id", "decision", "n", "last"]
        assert [c["type"] for c in body["columns"]][2:] == ["BIGINT", "TIMESTAMP"]
        assert body["rows"][0][:3] == [acme.id, "ALLOW", 3]
        capped = client.post("/v1/receipts/query", json={"sql": "SELECT id FROM receipts", "max_rows": 2})
        assert capped.json()["row_count"] == 2 and capped.json()["truncated"] is True


@pytest.mark.parametrize(("sql", "message"), [
    ("DELETE FROM receipts", "not DELETE"),
    ("SELECT 1; DROP TABLE receipts", "exactly one SELECT"),
    ("SELECT * FROM read_parquet('/tmp/*.parquet')", "file system operations are disabled"),
    ("SELECT nope FROM receipts", "query failed"),
])
def test_anything_but_one_good_select_is_400_naming_sql(
    app: Any, local_state: store.StateStore, acme: store.Tenant, sql: str, message: str
) -> None:
    with client_of(app, local_state, acme) as client:
        response = client.post("/v1/receipts/query", json={"sql": sql})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and message in error["message"]
    assert [f["field"] for f in error["fields"]] == ["sql"]


def test_the_query_needs_receipts_read(app: Any, local_state: store.StateStore, acme: store.Tenant) -> None:
    with client_of(app, local_state, acme, frozenset(store.SCOPES) - {"receipts:read"}) as client:
        response = client.post("/v1/receipts/query", json={"sql": "SELECT 1"})
    assert response.status_code == 403 and "'receipts:read'" in response.json()["error"]["message"]


def test_another_tenants_files_are_out_of_reach_even_by_path(
    app: Any, local_state: store.StateStore, record: receipt_store.StoreLedger,
    data_lake: sealed.SealedLedger,
    acme: store.Tenant, globex: store.Tenant,
) -> None:
    record.append(new_receipt(acme.id, 1))
    record.append(new_receipt(globex.id, 1))
    seal(record, data_lake)
    [acme_file] = data_lake.files(acme.id)
    assert f"tenant_id={acme.id}" in acme_file and data_lake.files(globex.id) != [acme_file]
    with client_of(app, local_state, globex) as client:
        sql = f"SELECT * FROM read_parquet('{acme_file}')"
        response = client.post("/v1/receipts/query", json={"sql": sql})
        assert response.status_code == 400 and "disabled" in response.json()["error"]["message"]
        mine = client.post("/v1/receipts/query", json={"sql": "SELECT DISTINCT tenant_id FROM receipts"})
        assert mine.json()["rows"] == [[globex.id]]


def test_sql_reads_what_is_sealed_and_a_new_receipt_once_the_sealer_passes(
    app: Any, local_state: store.StateStore, record: receipt_store.StoreLedger,
    data_lake: sealed.SealedLedger,
    acme: store.Tenant,
) -> None:
    with client_of(app, local_state, acme) as client:
        count = {"sql": "SELECT count(*) FROM receipts"}
        assert client.post("/v1/receipts/query", json=count).json()["rows"] == [[0]]  # nothing sealed yet
        written = record.append(new_receipt(acme.id, 1))
        assert client.get("/v1/receipts").json()["data"][0]["id"] == written.id  # the record: at once
        assert client.post("/v1/receipts/query", json=count).json()["rows"] == [[0]]
        seal(record, data_lake)
        assert client.post("/v1/receipts/query", json=count).json()["rows"] == [[1]]


def test_a_snapshot_and_the_file_list_need_the_data_dirs_token(
    app: Any, record: receipt_store.StoreLedger, data_lake: sealed.SealedLedger, data_dir: Path,
    acme: store.Tenant, globex: store.Tenant,
) -> None:
    record.append(new_receipt(acme.id, 1))
    record.append(new_receipt(globex.id, 1))
    seal(record, data_lake)
    with TestClient(app) as client:
        assert client.post("/v1/audit/files").status_code == 401
        assert client.post("/v1/audit/snapshot").status_code == 401
        wrong = client.post("/v1/audit/snapshot", headers={"Fibric-Audit-Token": "guess"})
        assert wrong.status_code == 401 and "local admin" in wrong.json()["error"]["message"]
        token = ledger_access.read(data_dir / sealed.CATALOG_FILE)
        assert token is not None
        listed = client.post("/v1/audit/files", headers={"Fibric-Audit-Token": token},
                             json={"tenant_id": globex.id}).json()
        assert listed["object"] == "audit_files" and listed["files"] == data_lake.files(globex.id)
        response = client.post("/v1/audit/snapshot", headers={"Fibric-Audit-Token": token},
                               json={"tenant_id": globex.id})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "audit_snapshot" and body["rows"] == 1 and body["tenant_id"] == globex.id
    path = Path(body["path"])
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    conn = duckdb.connect()
    try:
        assert conn.execute(f"SELECT tenant_id FROM read_parquet('{path}')").fetchall() == [(globex.id,)]
    finally:
        conn.close()


def test_queries_and_snapshots_do_not_hold_up_appends_or_sealing(
    record: receipt_store.StoreLedger, data_lake: sealed.SealedLedger, acme: store.Tenant
) -> None:
    for n in range(200):
        record.append(new_receipt(acme.id, n))
    seal(record, data_lake)
    stop = threading.Event()
    appended: list[int] = []

    def append_more() -> None:
        n = 1000
        while not stop.is_set():
            appended.append(record.append(new_receipt(acme.id, n)).tenant_seq)
            seal(record, data_lake)
            n += 1

    writer = threading.Thread(target=append_more)
    writer.start()
    try:
        counts = []
        for _ in range(5):
            result = audit_sql.query_ledger(data_lake, acme.id, "SELECT count(*) FROM receipts")
            counts.append(result.rows[0][0])
            path, _ = audit_sql.snapshot(data_lake, acme.id)
            path.unlink()
    finally:
        stop.set()
        writer.join(timeout=30)
    assert appended and appended == list(range(201, 201 + len(appended)))  # no append failed or skipped
    assert counts == sorted(counts) and counts[0] >= 200  # each query saw a consistent, growing snapshot
