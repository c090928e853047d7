"""Upgrading a data dir whose receipts are in a DuckDB `receipts.duckdb`: they become receipts of record.

The file is what the previous release wrote (ledger schema 2); its rows move
into the state store unchanged (so checkpoints taken before still verify),
chains are verified first, and the file is kept, renamed.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from fibric import errors, store
from fibric.store import chain_audit, legacy, receipt_store

# The previous release's table, as it created it (fibric/store/receipt_store.py of that release).
SCHEMA_2 = """
CREATE TABLE receipts (
    seq BIGINT NOT NULL, tenant_seq BIGINT NOT NULL, id VARCHAR PRIMARY KEY, reseller_id VARCHAR NOT NULL,
    tenant_id VARCHAR NOT NULL, operator_id VARCHAR NOT NULL, operator VARCHAR NOT NULL,
    capability VARCHAR NOT NULL, entity_key VARCHAR NOT NULL, args JSON NOT NULL,
    triggered_by_event VARCHAR, plan_id VARCHAR, run_id VARCHAR, proposed_by VARCHAR NOT NULL,
    decision VARCHAR NOT NULL, rule VARCHAR, policy JSON NOT NULL, policy_id VARCHAR, policy_sha256 VARCHAR,
    idempotency_key VARCHAR NOT NULL, outcome VARCHAR NOT NULL, approver VARCHAR, detail JSON,
    disposed_at TIMESTAMP NOT NULL, prev_hash VARCHAR NOT NULL, hash VARCHAR NOT NULL
);
CREATE TABLE ledger_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
INSERT INTO ledger_meta VALUES ('schema_version', '2');
"""


def chain(tenant_id: str, count: int, start_seq: int = 1) -> list[receipt_store.Receipt]:
    """A valid chain of `count` receipts, at second precision as the previous release wrote them."""
    made, prev = [], receipt_store.GENESIS
    for n in range(1, count + 1):
        receipt = receipt_store.Receipt(
            seq=start_seq + 2 * (n - 1), tenant_seq=n, id=f"rc_{tenant_id}_{n:04d}", reseller_id="rs_fibric",
            tenant_id=tenant_id, operator_id="op_1", operator="ship-risk", capability="orders.hold",
            entity_key=f"order:SO-{n}", args={"n": n}, triggered_by_event=None, plan_id="pl_1", run_id=None,
            proposed_by="rules", decision="ALLOW", rule="orders.hold",
            policy={"decision": "ALLOW", "rule": "orders.hold"}, policy_id=None, policy_sha256=None,
            idempotency_key=f"hold:SO-{n}", outcome="applied", approver="ops@acme", detail=None,
            at=datetime(2026, 6, 14, 9, 0, n % 60, tzinfo=UTC),
            prev_hash=prev, hash="")
        receipt = dataclasses.replace(receipt, hash=receipt_store.chain_hash(dataclasses.asdict(receipt)))
        made.append(receipt)
        prev = receipt.hash
    return made


def write_old_ledger(data_dir: Path, rows: list[receipt_store.Receipt]) -> Path:
    path = data_dir / legacy.LEDGER_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    conn = duckdb.connect(str(path))
    try:
        conn.execute(SCHEMA_2)
        for r in rows:
            values = dataclasses.asdict(r)
            # that release's columns
            old = [f for f in receipt_store.FIELDS if f not in receipt_store.LATER_FIELDS]
            row = [receipt_store._dumps(values[f]) if f in receipt_store.JSON_FIELDS else values[f]
                   for f in old]
            row[old.index("at")] = r.at.replace(tzinfo=None)
            columns = ", ".join("disposed_at" if f == "at" else f for f in old)
            conn.execute(f"INSERT INTO receipts ({columns}) VALUES ({', '.join('?' * len(row))})", row)
    finally:
        conn.close()
    return path


def test_the_old_ledger_becomes_the_receipts_of_record_unchanged(
    state: store.StateStore, ledger: receipt_store.StoreLedger, tmp_path: Path
) -> None:
    a, b = chain("t_a", 4, 1), chain("t_b", 3, 2)
    path = write_old_ledger(tmp_path, a + b)
    assert legacy.import_if_present(state, tmp_path) == 7
    assert not path.exists() and (tmp_path / "receipts.duckdb.imported").is_file()
    assert [ledger.get("t_a", r.id) for r in a] == a  # ids, seqs, times and hashes as they were
    assert [r.broken for r in chain_audit.verify(ledger, ["t_a", "t_b"])] == [None, None]
    more = ledger.append(dataclasses.replace(_new(a[0]), idempotency_key="hold:new"))
    assert (more.tenant_seq, more.prev_hash) == (5, a[-1].hash)  # the chain goes on
    assert more.seq > max(r.seq for r in a + b)
    assert legacy.import_if_present(state, tmp_path) == 0  # done once


def test_a_broken_chain_is_not_imported(state: store.StateStore, ledger: receipt_store.StoreLedger,
                                        tmp_path: Path) -> None:
    rows = chain("t_a", 3)
    rows[1] = dataclasses.replace(rows[1], outcome="failed")  # edited after the hash was taken
    path = write_old_ledger(tmp_path, rows)
    with pytest.raises(errors.PermanentError, match=rf"tenant t_a: chain broken at receipt {rows[1].id}"):
        legacy.import_if_present(state, tmp_path)
    assert path.exists() and ledger.tenants() == []  # nothing half-imported, the file left as it was


def test_a_tenant_with_receipts_of_record_is_not_overwritten(
    state: store.StateStore, ledger: receipt_store.StoreLedger, tmp_path: Path
) -> None:
    rows = chain("t_a", 2)
    ledger.append(_new(rows[0]))
    path = write_old_ledger(tmp_path, rows)
    with pytest.raises(errors.PermanentError, match="t_a, which already have receipts of record"):
        legacy.import_if_present(state, tmp_path)
    assert path.exists() and ledger.heads() == {"t_a": 1}


def test_an_import_interrupted_before_the_rename_only_renames_next_time(
    state: store.StateStore, ledger: receipt_store.StoreLedger, tmp_path: Path
) -> None:
    rows = chain("t_a", 2)
    path = write_old_ledger(tmp_path, rows)
    legacy.import_if_present(state, tmp_path)
    (tmp_path / "receipts.duckdb.imported").rename(path)  # as if the process died before renaming
    assert legacy.import_if_present(state, tmp_path) == 2
    assert not path.exists() and ledger.heads() == {"t_a": 2}


def test_a_file_of_the_first_schema_is_refused_with_a_reason(state: store.StateStore, tmp_path: Path) -> None:
    conn = duckdb.connect(str(tmp_path / legacy.LEDGER_FILE))
    try:
        conn.execute("CREATE TABLE receipts (seq BIGINT, id VARCHAR, tenant_id VARCHAR)")
        conn.execute("INSERT INTO receipts VALUES (1, 'rc_1', 't_a')")
    finally:
        conn.close()
    with pytest.raises(errors.PermanentError, match=r"ledger schema 1.*move the file aside"):
        legacy.import_if_present(state, tmp_path)


def test_serve_refuses_to_start_over_a_broken_old_ledger_with_a_message(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rows = chain("t_a", 2)
    write_old_ledger(data, [rows[0], dataclasses.replace(rows[1], args={"n": 99})])
    result = subprocess.run([sys.executable, "-m", "fibric.cli", "serve", "--port", "0", "--data-dir",
                             str(data)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "cannot be imported: tenant t_a: chain broken" in result.stderr
    assert "Traceback" not in result.stderr


def _new(receipt: receipt_store.Receipt) -> receipt_store.NewReceipt:
    names = {f.name for f in dataclasses.fields(receipt_store.NewReceipt)}
    return receipt_store.NewReceipt(**{k: v for k, v in dataclasses.asdict(receipt).items() if k in names})
