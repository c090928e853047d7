"""POST /v1/receipts/query (a tenant's auditor, by API key) and POST /v1/audit/snapshot (the local admin)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import duckdb
import pytest
from audit_support import client_of, new_receipt
from fastapi.testclient import TestClient

from fibric import store
from fibric.store import audit_sql, ledger_access, receipts


def test_a_key_queries_its_tenants_receipts_only(
    app: Any, local_state: store.StateStore, ledger: receipts.Ledger, acme: store.Tenant, globex: store.Tenant
) -> None:
    for n in range(3):
        ledger.append(new_receipt(acme.id, n))
    ledger.append(new_receipt(globex.id, 9, decision="BLOCK", outcome="refused"))
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


def test_a_snapshot_needs_the_data_dirs_token(
    app: Any, ledger: receipts.Ledger, ledger_path: Path, acme: store.Tenant, globex: store.Tenant
) -> None:
    ledger.append(new_receipt(acme.id, 1))
    ledger.append(new_receipt(globex.id, 1))
    with TestClient(app) as client:
        assert client.post("/v1/audit/snapshot").status_code == 401
        wrong = client.post("/v1/audit/snapshot", headers={"Fibric-Audit-Token": "guess"})
        assert wrong.status_code == 401 and "local admin" in wrong.json()["error"]["message"]
        token = ledger_access.read(ledger_path)
        assert token is not None
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


def test_queries_and_snapshots_do_not_hold_up_appends(ledger: receipts.Ledger, acme: store.Tenant) -> None:
    for n in range(200):
        ledger.append(new_receipt(acme.id, n))
    stop = threading.Event()
    appended: list[int] = []

    def append_more() -> None:
        n = 1000
        while not stop.is_set():
            appended.append(ledger.append(new_receipt(acme.id, n)).tenant_seq)
            n += 1

    writer = threading.Thread(target=append_more)
    writer.start()
    try:
        counts = []
        for _ in range(5):
            result = audit_sql.query_ledger(ledger, acme.id, "SELECT count(*) FROM receipts")
            counts.append(result.rows[0][0])
            path, _ = audit_sql.snapshot(ledger, acme.id)
            path.unlink()
    finally:
        stop.set()
        writer.join(timeout=30)
    assert appended and appended == list(range(201, 201 + len(appended)))  # no append failed or skipped
    assert counts == sorted(counts) and counts[0] >= 200  # each query saw a consistent, growing snapshot
