"""`fibric audit sql` and `export`: read-only SQL over one tenant's sealed receipts, as table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import duckdb
import pytest
from audit_support import fill, run

from fibric import store
from fibric.store import audit_sql, receipt_store, sealed


@pytest.fixture
def filled(
    data_dir: Path, acme: store.Tenant, globex: store.Tenant
) -> dict[str, list[receipt_store.Receipt]]:
    return fill(data_dir, [acme.id, globex.id], 6)


def sql(data_dir: Path, query: str, *args: str) -> tuple[int, str, str]:
    result = run(["audit", "sql", query, "--data-dir", str(data_dir), *args])
    return result.exit_code, result.stdout, result.stderr


def test_a_tenant_sees_its_receipts_only(data_dir: Path, filled: dict[str, list[receipt_store.Receipt]],
                                         acme: store.Tenant) -> None:
    code, out, err = sql(data_dir, "SELECT tenant_id, count(*) AS n FROM receipts GROUP BY ALL",
                         "--tenant", "acme", "-o", "json")
    assert code == 0, err
    assert json.loads(out) == [{"tenant_id": acme.id, "n": 6}]
    code, out, err = sql(data_dir, "SELECT count(DISTINCT tenant_id) AS tenants FROM receipts", "--all",
                         "-o", "csv")
    assert code == 0, err
    assert list(csv.reader(io.StringIO(out))) == [["tenants"], ["2"]]


def test_the_audit_query_of_the_docs_runs(
    data_dir: Path, filled: dict[str, list[receipt_store.Receipt]]
) -> None:
    code, out, err = sql(data_dir, "SELECT operator, decision, date_trunc('day', disposed_at) AS day, "
                         "count(*) AS n FROM receipts GROUP BY ALL ORDER BY decision", "--tenant", "acme")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["operator", "decision", "day", "n"]
    assert [line.split()[1] for line in lines[1:]] == ["ALLOW", "BLOCK"]
    assert [line.split()[-1] for line in lines[1:]] == ["4", "2"]


@pytest.mark.parametrize(("query", "reason"), [
    ("SELECT count(*) FROM read_parquet('{data}/ledger/**/*.parquet')", "file system operations are"),
    ("SELECT * FROM read_csv('/etc/passwd')", "file system operations are disabled"),
    ("SELECT * FROM glob('{data}/*')", "file system operations are disabled"),
    ("SELECT count(*) FROM ledger.receipts", "ledger"),
    ("SELECT * FROM duckdb_databases() WHERE path IS NOT NULL", None),  # nothing outside memory
    ("COPY receipts TO '{data}/leak.csv'", "not COPY"),
    ("ATTACH 'ducklake:{data}/ledger.ducklake' AS other (READ_ONLY)", "not ATTACH"),
    ("PRAGMA database_list", None),  # DuckDB runs it as a SELECT over the copy's own catalog
    ("SELECT * FROM duckdb_settings() WHERE name = 'enable_external_access' AND value = 'true'", None),
    ("PRAGMA enable_profiling", "not PRAGMA"),
    ("SET enable_external_access = true", "not SET"),
    ("INSTALL httpfs", "not "),
    ("LOAD httpfs", "not LOAD"),
    ("CALL duckdb_settings()", "not CALL"),
    ("CREATE TABLE t AS SELECT 1", "not CREATE"),
    ("SELECT 1; SELECT 2", "exactly one SELECT statement, not 2"),
    ("SELEC 1", "does not parse"),
])
def test_sql_cannot_reach_beyond_the_tenants_rows(
    data_dir: Path, filled: dict[str, list[receipt_store.Receipt]], query: str, reason: str | None,
) -> None:
    code, out, err = sql(data_dir, query.format(data=data_dir), "--tenant", "acme", "-o", "json")
    if reason is None:  # runs, but sees nothing of the lake's files or the data dir
        assert code == 0, err
        assert str(data_dir) not in out
        assert all(row.get("file") is None and row.get("value") is None for row in json.loads(out))
    else:
        assert code == 2, out
        assert reason in err
    assert not (data_dir / "leak.csv").exists()


def test_rows_are_capped(data_dir: Path, filled: dict[str, list[receipt_store.Receipt]]) -> None:
    code, out, err = sql(data_dir, "SELECT id FROM receipts", "--all", "--max-rows", "5", "-o", "csv")
    assert code == 0, err
    assert len(out.splitlines()) == 6 and "output cut at 5 rows" in err


def test_a_scope_is_needed_and_unknown_tenants_are_named(
    data_dir: Path, filled: dict[str, list[receipt_store.Receipt]]
) -> None:
    code, _, err = sql(data_dir, "SELECT 1", "--tenant", "initech")
    assert code == 2 and "no tenant 'initech'" in err
    code, _, err = sql(data_dir, "SELECT 1", "--tenant", "acme", "--all")
    assert code == 2 and "exclude each other" in err
    code, _, err = sql(data_dir, "SELECT 1")  # through the API, which needs a key
    assert code == 2 and "FIBRIC_KEY" in err


def test_export_writes_parquet_any_tool_can_read(
    data_dir: Path, tmp_path: Path, filled: dict[str, list[receipt_store.Receipt]], acme: store.Tenant
) -> None:
    out = tmp_path / "acme.parquet"
    result = run(["audit", "export", "--data-dir", str(data_dir), "--tenant", "acme", "--format", "parquet",
                  "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "6 receipts written" in result.stderr
    conn = duckdb.connect()
    try:
        rows = conn.execute(f"SELECT tenant_id, tenant_seq, id, hash FROM read_parquet('{out}') "
                            "ORDER BY tenant_seq").fetchall()
    finally:
        conn.close()
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (acme.id, r.tenant_seq, r.id, r.hash) for r in filled[acme.id]]


def test_a_query_over_its_time_budget_is_stopped(data_dir: Path,
                                                 filled: dict[str, list[receipt_store.Receipt]]) -> None:
    lake = sealed.SealedLedger(data_dir, read_only=True)
    try:
        files = lake.files()
    finally:
        lake.close()
    conn = audit_sql.over_files(files)
    try:
        with pytest.raises(audit_sql.QueryRejected, match=r"ran longer than 0\.5 s"):
            audit_sql.query(conn, "SELECT count(*) FROM range(1000000000000) a", timeout=0.5)
        assert audit_sql.query(conn, "SELECT count(*) FROM receipts").rows == [[12]]  # still usable
    finally:
        conn.close()
