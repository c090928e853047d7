"""docs/receipts.md is executable: its example queries run, and its hash recipe verifies a real export."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import duckdb
from audit_support import new_receipt, seal

from fibric.store import audit_sql, receipt_store, sealed

DOC = (Path(__file__).resolve().parents[2] / "docs" / "receipts.md").read_text()


def test_the_documented_columns_are_the_tables() -> None:
    documented = re.findall(r"^\| `(\w+)` \| (\w+) \|", DOC, re.M)
    assert [name for name, _ in documented] == [c.strip() for c in receipt_store.COLUMNS.split(",")]
    lake_types = re.findall(r"(\w+) (BIGINT|VARCHAR|JSON|TIMESTAMP)\b", sealed.SCHEMA)
    assert [(name, kind) for name, kind in documented] == lake_types  # the table auditors query


def test_the_example_queries_run_and_the_recipe_recomputes_every_hash(
    record: receipt_store.StoreLedger, data_lake: sealed.SealedLedger, tmp_path: Path
) -> None:
    record.append(new_receipt("t_a", 1, decision="BLOCK", outcome="refused",
                              policy={"decision": "BLOCK", "rule": "stale", "reasons": ["plan too old"]}))
    record.append(new_receipt("t_a", 2, outcome="failed", detail={"message": "timeout"},
                              args={"note": "ünïcode"}))
    record.append(new_receipt("t_b", 3, decision="ALERT",
                              decision_input={"action": {"args": {"card": "**masked**"}}, "n": 3}))
    seal(record, data_lake)
    files = data_lake.files()
    block = re.search(r"Example queries:\n\n```sql\n(.*?)```", DOC, re.S)
    assert block is not None
    queries = [q.strip() for q in block.group(1).split(";") if q.strip()]
    assert len(queries) >= 6
    for query in queries:
        conn = audit_sql.over_files(files)
        try:
            audit_sql.query(conn, query)
        finally:
            conn.close()
    assert audit_sql.export(files, tmp_path / "receipts.parquet") == 3
    recipe = re.search(r"```python\n(.*?)```", DOC, re.S)
    assert recipe is not None
    subprocess.run([sys.executable, "-c", recipe.group(1)], cwd=tmp_path, check=True, timeout=60)
    # ... and it does catch an edit.
    edited = tmp_path / "edited"
    edited.mkdir()
    conn = duckdb.connect()
    try:
        conn.execute(f"CREATE TABLE r AS SELECT * FROM read_parquet('{tmp_path / 'receipts.parquet'}')")
        conn.execute("UPDATE r SET outcome = 'applied' WHERE outcome = 'failed'")
        conn.execute(f"COPY r TO '{edited / 'receipts.parquet'}' (FORMAT parquet)")
    finally:
        conn.close()
    caught = subprocess.run([sys.executable, "-c", recipe.group(1)], cwd=edited, capture_output=True,
                            text=True, timeout=60)
    assert caught.returncode != 0 and "AssertionError" in caught.stderr
