"""The DuckDB receipt ledger: append-only, per-tenant sequences and hash chains, safe under threads."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from audit_support import fill, new_receipt, raw

from fibric import errors
from fibric.store import audit, audit_sql, ledger_access, receipts


def test_each_tenant_numbers_and_chains_its_own_receipts(ledger_path: Path) -> None:
    ledger = receipts.Ledger(ledger_path)
    try:
        a1 = ledger.append(new_receipt("t_a", 1))
        b1 = ledger.append(new_receipt("t_b", 1))
        a2 = ledger.append(new_receipt("t_a", 2, args={"tuple": (1, 2)}, detail={"order": "SO-2"}))
        assert [a1.seq, b1.seq, a2.seq] == [1, 2, 3]  # ledger-wide order, for pagination
        assert [a1.tenant_seq, b1.tenant_seq, a2.tenant_seq] == [1, 1, 2]
        assert a1.prev_hash == b1.prev_hash == receipts.GENESIS
        assert a2.prev_hash == a1.hash
        # What append returns is what a reader gets back, and its hash recomputes from it.
        assert ledger.get("t_a", a2.id) == a2
        assert a2.args == {"tuple": [1, 2]}
        assert receipts.chain_hash(dataclasses.asdict(a2)) == a2.hash
    finally:
        ledger.close()


def test_a_reopened_ledger_continues_each_chain(ledger_path: Path) -> None:
    first = fill(ledger_path, ["t_a", "t_b"], 3)
    ledger = receipts.Ledger(ledger_path)
    try:
        more = ledger.append(new_receipt("t_b", 9))
    finally:
        ledger.close()
    assert (more.seq, more.tenant_seq, more.prev_hash) == (7, 4, first["t_b"][-1].hash)


def test_concurrent_appends_lose_nothing_and_keep_every_chain_whole(ledger_path: Path) -> None:
    ledger = receipts.Ledger(ledger_path)
    written: list[receipts.Receipt] = []
    lock = threading.Lock()

    def worker(tenant: str, start: int) -> None:
        for n in range(start, start + 40):
            receipt = ledger.append(new_receipt(tenant, n))
            with lock:
                written.append(receipt)

    threads = [threading.Thread(target=worker, args=(f"t_{i % 3}", i * 100)) for i in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        ledger.close()
    assert len(written) == 320
    assert sorted(r.seq for r in written) == list(range(1, 321))
    conn = audit_sql.from_file(ledger_path)
    try:
        results = audit.verify(conn, audit.tenants(conn))
        assert [(r.tenant_id, r.receipts, r.broken) for r in results] == [
            ("t_0", 120, None), ("t_1", 120, None), ("t_2", 80, None)]
    finally:
        conn.close()


def test_bad_decisions_and_outcomes_are_refused_before_anything_is_written(ledger_path: Path) -> None:
    ledger = receipts.Ledger(ledger_path)
    try:
        with pytest.raises(errors.PermanentError, match="decision"):
            ledger.append(new_receipt("t_a", decision="MAYBE"))
        with pytest.raises(errors.PermanentError, match="not JSON"):
            ledger.append(new_receipt("t_a", args={"x": object()}))
        assert ledger.append(new_receipt("t_a")).tenant_seq == 1
    finally:
        ledger.close()


def test_a_ledger_that_cannot_write_says_so_and_records_nothing(ledger_path: Path) -> None:
    ledger = receipts.Ledger(ledger_path)
    ledger.append(new_receipt("t_a", 1))
    ledger._conn.close()  # the database is gone from under the ledger
    # The executor must never act on a receipt that was not recorded: a failed write is an error.
    with pytest.raises(errors.TemporaryError, match="receipt ledger unavailable"):
        ledger.append(new_receipt("t_a", 2))
    ledger.close()
    reopened = receipts.Ledger(ledger_path)
    try:
        assert reopened.append(new_receipt("t_a", 3)).tenant_seq == 2  # the failed one took no place
    finally:
        reopened.close()


def test_a_file_of_the_first_schema_with_receipts_is_refused_with_a_reason(ledger_path: Path) -> None:
    with raw(ledger_path) as conn:
        conn.execute("CREATE TABLE receipts (seq BIGINT, id VARCHAR, tenant_id VARCHAR)")
        conn.execute("INSERT INTO receipts VALUES (1, 'rc_1', 't_a')")
    ledger = receipts.Ledger(ledger_path)
    with pytest.raises(errors.PermanentError, match=r"ledger schema 1.*move the file aside"):
        ledger.list_receipts("t_a")
    ledger.close()


def test_an_empty_file_of_the_first_schema_is_upgraded(ledger_path: Path) -> None:
    schema = receipts.SCHEMA.split("CREATE TABLE IF NOT EXISTS ledger_meta")[0]
    first = "\n".join(line for line in schema.splitlines() if not line.strip().startswith("tenant_seq"))
    with raw(ledger_path) as conn:
        conn.execute(first)
    ledger = receipts.Ledger(ledger_path)
    try:
        assert ledger.append(new_receipt("t_a")).tenant_seq == 1
    finally:
        ledger.close()


def test_the_holder_of_the_ledger_publishes_a_private_token_and_withdraws_it(ledger_path: Path) -> None:
    ledger = receipts.Ledger(ledger_path)
    token = ledger_access.token_path(ledger_path)
    ledger.list_receipts("t_a")
    assert token.stat().st_mode & 0o777 == 0o600
    assert ledger_access.check(receipts.audit_token(ledger), token.read_text())
    assert not ledger_access.check(receipts.audit_token(ledger), "guess")
    token.write_text("guess")  # rewriting the file grants nothing
    assert not ledger_access.check(receipts.audit_token(ledger), "guess")
    ledger.close()
    assert not token.exists()


def test_a_reader_holding_the_file_briefly_does_not_stop_the_writer(ledger_path: Path) -> None:
    fill(ledger_path, ["t_a"], 1)
    # Another process (an auditor's direct copy) holds DuckDB's shared lock for a moment.
    reader = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time\n"
         f"c = duckdb.connect({str(ledger_path)!r}, read_only=True)\n"
         "print('held', flush=True); time.sleep(1.0); c.close()"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "held"
        ledger = receipts.Ledger(ledger_path)
        try:
            assert ledger.append(new_receipt("t_a", 2)).tenant_seq == 2  # waited for the lock, then wrote
        finally:
            ledger.close()
    finally:
        reader.wait(timeout=30)
        if reader.stdout is not None:
            reader.stdout.close()
