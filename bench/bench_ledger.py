"""The receipt ledger: appends per second, and an auditor's query over a million receipts.

Measured in the same run, against baselines in the same run (shared, noisy
machines):

1. Appends per second through `Ledger.append` (hash chain, per-tenant
   sequence, durable commit per call), one thread and N threads (concurrent
   appends share a commit), against a bare DuckDB INSERT of the same rows into
   the same table, one autocommitted statement per row, without the chain.
2. The audit query of docs/receipts.md (counts by decision per operator per
   day) over `--rows` receipts in DuckDB, against the same query in SQLite on
   the same rows; and the same query the way `fibric audit sql --all` runs it
   (copy into a locked-down in-memory DuckDB, then query), end to end.

Rows for (2) are generated in bulk in SQL (their hashes are not a valid
chain; the query does not look). Run: python bench/bench_ledger.py
[--appends 800] [--threads 8] [--rows 1000000]. Loopback only; no network.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402

from fibric.store import audit_sql, receipts  # noqa: E402

DUCKDB_QUERY = """
SELECT operator, decision, date_trunc('day', disposed_at) AS day, count(*) AS n
FROM receipts GROUP BY ALL ORDER BY day, operator, decision
"""
SQLITE_QUERY = """
SELECT operator, decision, substr(disposed_at, 1, 10) AS day, count(*) AS n
FROM receipts GROUP BY 1, 2, 3 ORDER BY day, operator, decision
"""
SQLITE_COLUMNS = ("seq", "tenant_seq", "id", "tenant_id", "operator", "capability", "entity_key", "decision",
                  "outcome", "disposed_at", "prev_hash", "hash")


def new_receipt(n: int) -> receipts.NewReceipt:
    return receipts.NewReceipt(
        reseller_id="rs_fibric", tenant_id=f"t_{n % 4}", operator_id="op_8f2a1c", operator="ship-risk",
        capability="orders.hold", entity_key=f"order:SO-{n}", idempotency_key=f"ship-risk:SO-{n}:hold",
        decision="ALLOW", outcome="applied", rule="orders.hold", args={"reason": "late", "order": n},
        policy_id="pol_22b9", policy_sha256="ab" * 32, detail={"held": True})


def appends(folder: Path, count: int, threads: int) -> float:
    """Receipts per second through Ledger.append from `threads` threads."""
    ledger = receipts.Ledger(folder / f"appends-{threads}.duckdb")
    ledger.list_receipts("t_0")  # open outside the timing
    per = count // threads

    def work(start: int) -> None:
        for n in range(start, start + per):
            ledger.append(new_receipt(n))

    workers = [threading.Thread(target=work, args=(i * per,)) for i in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    ledger.close()
    return per * threads / elapsed


def bare_inserts(folder: Path, count: int, *, as_json: bool = False) -> float:
    """Rows per second of a plain INSERT of the same rows, same table, no chain, one commit per row.

    As 26 bound parameters, the obvious way; or `as_json`, one JSON parameter
    per row through the very statement the ledger uses, so the ratio to it is
    the cost of the chain alone.
    """
    conn = duckdb.connect(str(folder / f"bare-{as_json}.duckdb"), config=dict(receipts.CONFIG))
    conn.execute(receipts.SCHEMA)
    sql = f"INSERT INTO receipts ({receipts.COLUMNS}) VALUES ({', '.join('?' * len(receipts.FIELDS))})"
    rows = []
    for n in range(count):  # built outside the timing: the baseline is the INSERT alone
        new = new_receipt(n)
        rows.append([n + 1, n + 1, f"rc_{n:016x}", new.reseller_id, new.tenant_id, new.operator_id,
                     new.operator, new.capability, new.entity_key, '{"reason":"late"}', None, None, None,
                     new.proposed_by, new.decision, new.rule, '{"decision":"ALLOW"}', new.policy_id,
                     new.policy_sha256, new.idempotency_key, new.outcome, None, '{"held":true}',
                     "2026-06-14 09:02:11", receipts.GENESIS, "cd" * 32])
    if as_json:
        names = [("disposed_at" if f == "at" else f) for f in receipts.FIELDS]
        sql = receipts._INSERT
        rows = [[json.dumps([dict(zip(names, row, strict=True))])] for row in rows]
    started = time.perf_counter()
    for row in rows:
        conn.execute(sql, row)
    elapsed = time.perf_counter() - started
    conn.close()
    return count / elapsed


def generate(path: Path, rows: int) -> None:
    """`rows` receipts of 20 tenants, 12 operators and 90 days, written in bulk."""
    ledger = receipts.Ledger(path)
    ledger.list_receipts("t_0")  # creates the schema
    ledger.close()
    conn = duckdb.connect(str(path), config=dict(receipts.CONFIG))
    conn.execute(f"""
        INSERT INTO receipts ({receipts.COLUMNS})
        SELECT i + 1, row_number() OVER (PARTITION BY i % 20 ORDER BY i),
               'rc_' || lpad(format('{{:x}}', i), 16, '0'), 'rs_fibric', 't_' || (i % 20),
               'op_' || (i % 12), 'operator-' || (i % 12), 'orders.hold',
               'order:SO-' || (i % 50000), '{{"reason":"late"}}', 'ev_' || i, 'pl_' || (i // 3), NULL,
               'model',
               CASE WHEN i % 10 < 7 THEN 'ALLOW' WHEN i % 10 < 8 THEN 'ALERT' WHEN i % 10 < 9 THEN 'BLOCK'
                    ELSE 'DEDUP' END,
               'orders.hold', '{{"decision":"ALLOW"}}', 'pol_22b9', repeat('ab', 32), 'key-' || i,
               CASE WHEN i % 10 < 8 THEN 'applied' WHEN i % 10 < 9 THEN 'refused' ELSE 'deduplicated' END,
               'ops@acme.com', NULL,
               TIMESTAMP '2026-03-01' + to_seconds((i * 7919) % (90 * 86400)),
               md5(i::VARCHAR) || md5((i + 1)::VARCHAR), md5((i + 2)::VARCHAR) || md5((i + 3)::VARCHAR)
        FROM range({rows}) t(i)
    """)
    conn.close()


def to_sqlite(source: Path, target: Path) -> None:
    """The same rows (the columns the query and an auditor need), copied into SQLite."""
    src = duckdb.connect(str(source), read_only=True, config=dict(receipts.CONFIG))
    dst = sqlite3.connect(target)
    dst.execute(f"CREATE TABLE receipts ({', '.join(SQLITE_COLUMNS)})")
    cur = src.execute(f"SELECT {', '.join(SQLITE_COLUMNS)} FROM receipts ORDER BY seq")
    insert = f"INSERT INTO receipts VALUES ({', '.join('?' * len(SQLITE_COLUMNS))})"
    at = SQLITE_COLUMNS.index("disposed_at")
    while batch := cur.fetchmany(50_000):
        dst.executemany(insert, [(*r[:at], r[at].isoformat(sep=" "), *r[at + 1:]) for r in batch])
    dst.commit()
    dst.close()
    src.close()


def best(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--appends", type=int, default=800)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        folder = Path(tmp)
        bare = bare_inserts(folder, args.appends)
        bare_json = bare_inserts(folder, args.appends, as_json=True)
        one = appends(folder, args.appends, 1)
        many = appends(folder, args.appends, args.threads)
        print(f"appends: bare INSERT (26 parameters) {bare:,.0f}/s, bare INSERT (one JSON parameter, the "
              f"ledger's statement) {bare_json:,.0f}/s; Ledger.append with the chain: 1 thread "
              f"{one:,.0f}/s (x{one / bare:.2f} of the first, x{one / bare_json:.2f} of the second), "
              f"{args.threads} threads {many:,.0f}/s (x{many / bare:.2f}, x{many / bare_json:.2f})")

        path = folder / "million.duckdb"
        started = time.perf_counter()
        generate(path, args.rows)
        to_sqlite(path, folder / "million.sqlite")
        took = time.perf_counter() - started
        print(f"generated {args.rows:,} receipts in DuckDB and SQLite in {took:.1f} s")

        conn = duckdb.connect(str(path), read_only=True, config=dict(receipts.CONFIG))
        duck, duck_rows = best(lambda: conn.execute(DUCKDB_QUERY).fetchall())
        conn.close()
        lite_conn = sqlite3.connect(folder / "million.sqlite")
        lite, lite_rows = best(lambda: lite_conn.execute(SQLITE_QUERY).fetchall())
        lite_conn.close()
        assert [r[-1] for r in duck_rows] == [r[-1] for r in lite_rows], "the two answers differ"

        def audited() -> list[Any]:
            copy = audit_sql.from_file(path)
            try:
                audit_sql.lock_down(copy)
                return audit_sql.query(copy, DUCKDB_QUERY, max_rows=100_000).rows
            finally:
                copy.close()

        end_to_end, _ = best(audited, repeat=1)
        print(f"audit query (decisions per operator per day, {len(duck_rows)} groups) over {args.rows:,} "
              f"receipts: DuckDB {duck * 1000:.0f} ms, SQLite {lite * 1000:.0f} ms "
              f"(DuckDB x{lite / duck:.1f} faster); `fibric audit sql --all` path (copy + locked-down "
              f"query) {end_to_end * 1000:.0f} ms")


if __name__ == "__main__":
    main()
