"""The receipt ledger: appends of record, sealing, and an auditor's query over a million receipts.

Measured in the same run, against baselines in the same run (shared, noisy
machines):

1. Receipts of record appended per second through `StoreLedger.append` (the
   per-tenant head lock, the hash chain, the unique and count indexes, a
   durable commit per receipt), from one thread and from N threads, against
   a bare INSERT of the same rows into a table without the chain, the head
   row or the indexes, one durable commit per row, in the same SQLite
   settings.
2. Sealing: receipts per second that `sealed.seal_pending` moves from the
   state store into the DuckLake lake, in passes of up to 5,000 per tenant.
3. The audit query of docs/receipts.md (counts by decision per operator per
   day) over `--rows` sealed receipts, the way `fibric audit sql --all` and
   POST /v1/receipts/query run it (a locked-down DuckDB over the lake's
   Parquet files, the answer rendered as JSON), against the same query in
   DuckDB over the same rows in a native table, and for one tenant's
   partition.

Rows for (3) are generated in bulk in SQL (their hashes are not a valid
chain; the query does not look). Run: python bench/bench_ledger.py
[--appends 2000] [--threads 8] [--seal 20000] [--rows 1000000]. Loopback only.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402

from fibric import store  # noqa: E402
from fibric.store import audit_sql, receipt_store, sealed  # noqa: E402

QUERY = """
SELECT operator, decision, date_trunc('day', disposed_at) AS day, count(*) AS n
FROM receipts GROUP BY ALL ORDER BY day, operator, decision
"""
TENANTS = 20


def new_receipt(n: int, tenants: int = 4) -> receipt_store.NewReceipt:
    return receipt_store.NewReceipt(
        reseller_id="rs_fibric", tenant_id=f"t_{n % tenants}", operator_id="op_8f2a1c", operator="ship-risk",
        capability="orders.hold", entity_key=f"order:SO-{n}", idempotency_key=f"ship-risk:SO-{n}:hold",
        decision="ALLOW", outcome="applied", rule="orders.hold", args={"reason": "late", "order": n},
        policy_id="pol_22b9", policy_sha256="ab" * 32, detail={"held": True})


def appends(folder: Path, count: int, threads: int) -> float:
    """Receipts per second through StoreLedger.append from `threads` threads, each on its own tenant."""
    state = store.open_store(folder / f"appends-{threads}")
    ledger = receipt_store.StoreLedger(state)
    per = count // threads

    def work(start: int) -> None:
        for n in range(start, start + per):
            ledger.append(new_receipt(n, tenants=threads))

    workers = [threading.Thread(target=work, args=(i * per,)) for i in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    state.close()
    return per * threads / elapsed


def bare_inserts(folder: Path, count: int) -> float:
    """Rows per second of a plain INSERT of the same rows, no chain, head or index, a FULL commit each."""
    conn = sqlite3.connect(folder / "bare.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"CREATE TABLE receipts ({receipt_store.COLUMNS})")
    marks = ", ".join("?" * len(receipt_store.FIELDS))
    insert = f"INSERT INTO receipts ({receipt_store.COLUMNS}) VALUES ({marks})"
    rows = []
    for n in range(count):  # built outside the timing: the baseline is the INSERT alone
        new = new_receipt(n)
        rows.append([n + 1, n + 1, f"rc_{n:016x}", new.reseller_id, new.tenant_id, new.operator_id,
                     new.operator, new.capability, new.entity_key, '{"reason":"late"}', None, None, None,
                     new.proposed_by, new.decision, new.rule, '{"decision":"ALLOW"}', new.policy_id,
                     new.policy_sha256, new.idempotency_key, new.outcome, None, '{"held":true}',
                     "2026-06-14T09:02:11.000000+00:00", receipt_store.GENESIS, "cd" * 32]
                    + [None] * len(receipt_store.LATER_FIELDS))  # the trailing, later columns
    started = time.perf_counter()
    for row in rows:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(insert, row)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return count / elapsed


def sealing(folder: Path, count: int) -> float:
    """Receipts per second sealed from the state store into the lake, passes of up to 5,000 a tenant."""
    data = folder / "sealing"
    state = store.open_store(data)
    record = receipt_store.StoreLedger(state)
    with state.backend.transaction(write=True) as cur:  # one transaction: the appends are not measured
        for n in range(count):
            receipt_store.append(cur, state.sql, new_receipt(n))
    lake = sealed.SealedLedger(data)
    try:
        started = time.perf_counter()
        total = 0
        while batch := sealed.seal_pending(record, lake):
            total += len(batch)
        elapsed = time.perf_counter() - started
        assert total == count == lake.count()
    finally:
        lake.close()
        state.close()
    return count / elapsed


def generate(lake: sealed.SealedLedger, native: Path, rows: int) -> None:
    """`rows` receipts of 20 tenants, 12 operators and 90 days: sealed into the lake, and a native table."""
    select = f"""
        SELECT i + 1 AS seq, (i // {TENANTS}) + 1 AS tenant_seq,
               'rc_' || lpad(format('{{:x}}', i), 16, '0') AS id, 'rs_fibric' AS reseller_id,
               't_' || (i % {TENANTS}) AS tenant_id, 'op_' || (i % 12) AS operator_id,
               'operator-' || (i % 12) AS operator, 'orders.hold' AS capability,
               'order:SO-' || (i % 50000) AS entity_key, '{{"reason":"late"}}' AS args,
               'ev_' || i AS triggered_by_event, 'pl_' || (i // 3) AS plan_id, NULL AS run_id,
               'model' AS proposed_by,
               CASE WHEN i % 10 < 7 THEN 'ALLOW' WHEN i % 10 < 8 THEN 'ALERT' WHEN i % 10 < 9 THEN 'BLOCK'
                    ELSE 'DEDUP' END AS decision,
               'orders.hold' AS rule, '{{"decision":"ALLOW"}}' AS policy, 'pol_22b9' AS policy_id,
               repeat('ab', 32) AS policy_sha256, 'key-' || i AS idempotency_key,
               CASE WHEN i % 10 < 8 THEN 'applied' WHEN i % 10 < 9 THEN 'refused' ELSE 'deduplicated' END
               AS outcome, 'ops@acme.com' AS approver, NULL AS detail,
               TIMESTAMP '2026-03-01' + to_seconds((i * 7919) % (90 * 86400)) AS disposed_at,
               md5(i::VARCHAR) || md5((i + 1)::VARCHAR) AS prev_hash,
               md5((i + 2)::VARCHAR) || md5((i + 3)::VARCHAR) AS hash,
               '{{"key_id":"key_bench","key_name":"ops"}}' AS decided_by,
               'req_' || md5(i::VARCHAR) AS request_id, NULL::VARCHAR AS trace_id,
               NULL::VARCHAR AS decision_input
        FROM range({rows}) t(i)"""
    conn = duckdb.connect(str(native), config=dict(sealed.CONFIG))
    conn.execute(f"CREATE TABLE receipts AS {select}")
    staged = native.with_suffix(".parquet")
    conn.execute(f"COPY receipts TO '{staged}' (FORMAT parquet)")
    conn.close()
    lake.marks()  # creates the lake
    # Sealed in batches of 100k, as passes would leave it before maintenance merges their files.
    cursor = lake._cursor()
    for start in range(0, rows, 100_000):
        cursor.execute(f"INSERT INTO {sealed.TABLE} SELECT * FROM read_parquet('{staged}') "
                       f"WHERE seq > {start} AND seq <= {start + 100_000}")
    staged.unlink()


def best(fn: Callable[[], Any], repeat: int = 5) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seal", type=int, default=20_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        folder = Path(tmp)
        bare = bare_inserts(folder, args.appends)
        one = appends(folder, args.appends, 1)
        many = appends(folder, args.appends, args.threads)
        print(f"appends of record (SQLite, synchronous=FULL): bare INSERT, no chain or index {bare:,.0f}/s; "
              f"StoreLedger.append 1 thread {one:,.0f}/s (x{one / bare:.2f}), {args.threads} threads "
              f"{many:,.0f}/s (x{many / bare:.2f})")
        rate = sealing(folder, args.seal)
        print(f"sealing: {rate:,.0f} receipts/s from the state store into the lake ({args.seal:,} receipts)")

        lake = sealed.SealedLedger(folder / "audit")
        native = folder / "native.duckdb"
        started = time.perf_counter()
        generate(lake, native, args.rows)
        print(f"generated {args.rows:,} sealed receipts ({len(lake.files())} files) in "
              f"{time.perf_counter() - started:.1f} s")
        conn = duckdb.connect(str(native), read_only=True, config=dict(sealed.CONFIG))
        direct, direct_rows = best(lambda: conn.execute(QUERY).fetchall())
        conn.close()

        def audited(tenant_id: str | None) -> list[Any]:
            copy = audit_sql.over_files(lake.files(tenant_id), threads=os.cpu_count() or 1)  # as the CLI
            try:
                return audit_sql.query(copy, QUERY, max_rows=100_000, max_bytes=None).rows
            finally:
                copy.close()

        everyone, rows = best(lambda: audited(None))
        assert [r[-1] for r in rows] == [r[-1] for r in direct_rows], "the two answers differ"
        one_tenant, _ = best(lambda: audited("t_3"))
        files = len(lake.files())
        lake.maintain(keep=timedelta(0))  # what the sealer's maintenance leaves: merged files
        merged, _ = best(lambda: audited(None))
        merged_files = len(lake.files())
        lake.close()
        print(f"audit query (decisions per operator per day, {len(direct_rows)} groups) over {args.rows:,} "
              f"receipts: DuckDB on a native table {direct * 1000:.0f} ms; `fibric audit sql --all` path "
              f"(locked-down DuckDB over the lake's {files} files, JSON answer) {everyone * 1000:.0f} ms "
              f"(x{everyone / direct:.1f}); after maintenance ({merged_files} files) {merged * 1000:.0f} ms "
              f"(x{merged / direct:.1f}); one tenant's ({args.rows // TENANTS:,} receipts) "
              f"{one_tenant * 1000:.0f} ms")


if __name__ == "__main__":
    main()
