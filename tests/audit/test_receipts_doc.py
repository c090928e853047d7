"""docs/receipts.md is executable: its example queries run, and its hash recipe verifies a real export."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from audit_support import new_receipt

from fibric.store import audit_sql, receipts

DOC = (Path(__file__).resolve().parents[2] / "docs" / "receipts.md").read_text()


def test_the_documented_columns_are_the_tables() -> None:
    documented = re.findall(r"^\| `(\w+)` \| (\w+) \|", DOC, re.M)
    assert [name for name, _ in documented] == [c.strip() for c in receipts.COLUMNS.split(",")]


def test_the_example_queries_run_and_the_recipe_recomputes_every_hash(ledger_path: Path) -> None:
    ledger = receipts.Ledger(ledger_path)
    try:
        ledger.append(new_receipt("t_a", 1, decision="BLOCK", outcome="refused",
                                  policy={"decision": "BLOCK", "rule": "stale", "reasons": ["plan too old"]}))
        ledger.append(new_receipt("t_a", 2, outcome="failed", detail={"message": "timeout"},
                                  args={"note": "ünïcode"}))
        ledger.append(new_receipt("t_b", 3, decision="ALERT"))
    finally:
        ledger.close()
    block = re.search(r"Example queries:\n\n```sql\n(.*?)```", DOC, re.S)
    assert block is not None
    queries = [q.strip() for q in block.group(1).split(";") if q.strip()]
    assert len(queries) >= 6
    for query in queries:
        conn = audit_sql.from_file(ledger_path)
        try:
            audit_sql.lock_down(conn)
            audit_sql.query(conn, query)
        finally:
            conn.close()
    conn = audit_sql.from_file(ledger_path)
    try:
        assert audit_sql.export(conn, ledger_path.parent / "receipts.parquet") == 3
    finally:
        conn.close()
    recipe = re.search(r"```python\n(.*?)```", DOC, re.S)
    assert recipe is not None
    subprocess.run([sys.executable, "-c", recipe.group(1)], cwd=ledger_path.parent, check=True, timeout=60)
    # ... and it does catch an edit.
    edited = ledger_path.parent / "edited"
    edited.mkdir()
    conn = audit_sql.from_file(ledger_path)
    try:
        conn.execute("UPDATE receipts SET outcome = 'applied' WHERE outcome = 'failed'")
        audit_sql.export(conn, edited / "receipts.parquet")
    finally:
        conn.close()
    caught = subprocess.run([sys.executable, "-c", recipe.group(1)], cwd=edited, capture_output=True,
                            text=True, timeout=60)
    assert caught.returncode != 0 and "AssertionError" in caught.stderr
