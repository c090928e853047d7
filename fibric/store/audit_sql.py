"""Auditors' read-only SQL over receipts: an in-memory copy, locked down, one SELECT at a time.

DuckDB lets one process write a database file, and while it does no other
process may open it, not even read-only. So an auditor never queries the live
file: the rows they may see are copied into a private in-memory DuckDB, in one
statement (a consistent snapshot), and the query runs there.

- With no server running, the copy is read straight from the file
  (`from_file`), holding its shared lock only for the copy; the ledger, should
  it open meanwhile, waits that long (receipts.OPEN_WAIT).
- While `fibric serve` holds the file, the server copies the rows to Parquet
  beside its appends, without blocking them (receipts.export_parquet), and the
  copy is loaded from there (`from_parquet`): in the server for a tenant's API
  key (POST /v1/receipts/query), in the CLI for the local admin.

Before any SQL of the auditor's runs, the copy is locked down: external access
(files, ATTACH, COPY, extensions) off, configuration locked, one thread and a
memory limit; only a single SELECT statement is accepted, and a query over
its time budget is interrupted. The copy holds only the rows the caller may
see, so SQL naming other schemas, catalogs or `duckdb_*` metadata finds
nothing more.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import secrets
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fibric import errors
from fibric.store import receipts

MAX_ROWS = 10_000
TIMEOUT = 10.0  # seconds
MEMORY_LIMIT = "512MB"
SNAPSHOTS = "audit-snapshots"  # folder beside the ledger
SNAPSHOT_TTL = 3600.0  # seconds


class LedgerHeld(errors.TemporaryError):
    """Another process (the server) holds the ledger file; ask it for a snapshot instead."""


class QueryRejected(errors.PermanentError):
    """The auditor's SQL is not one read-only SELECT, or failed; the message says why."""


@dataclass(frozen=True)
class Result:
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]  # JSON-ready values
    truncated: bool  # more rows than max_rows


def from_file(ledger_path: Path, tenant_id: str | None = None) -> Any:
    """An in-memory copy of the ledger file's receipts (one tenant's, or all); LedgerHeld if locked."""
    import duckdb

    if not ledger_path.is_file():
        raise errors.NotFound(f"no receipt ledger at {ledger_path}")
    conn = _memory()
    literal = str(ledger_path).replace("'", "''")
    try:
        try:
            conn.execute(f"ATTACH '{literal}' AS ledger (READ_ONLY)")
        except duckdb.Error as e:
            if "lock" in str(e).lower():
                raise LedgerHeld(
                    f"{ledger_path} is held by another process (is `fibric serve` running?)") from e
            raise errors.PermanentError(f"cannot read {ledger_path}: {e}") from e
        try:
            _copy(conn, "ledger.receipts", tenant_id)
        finally:
            conn.execute("DETACH ledger")
    except BaseException:
        conn.close()
        raise
    return conn


def from_parquet(path: Path, tenant_id: str | None = None) -> Any:
    """An in-memory copy of a Parquet snapshot written by receipts.export_parquet."""
    conn = _memory()
    literal = str(path).replace("'", "''")
    try:
        _copy(conn, f"read_parquet('{literal}')", tenant_id)
    except BaseException:
        conn.close()
        raise
    return conn


def query_ledger(ledger: receipts.Ledger, tenant_id: str, sql: str, *, max_rows: int = MAX_ROWS) -> Result:
    """Run an auditor's SELECT over one tenant's receipts of a ledger this process holds."""
    check_select(sql)  # before copying anything
    with tempfile.TemporaryDirectory(prefix="fibric-audit-") as folder:  # mode 0700
        path = Path(folder) / "receipts.parquet"
        receipts.export_parquet(ledger, path, tenant_id)
        conn = from_parquet(path)
    try:
        lock_down(conn)
        return query(conn, sql, max_rows=max_rows)
    finally:
        conn.close()


def snapshot(ledger: receipts.Ledger, tenant_id: str | None = None) -> tuple[Path, int]:
    """Write the receipts to a Parquet file beside the ledger, for the local admin; (path, rows).

    The folder is the owner's only (0700); the admin's CLI reads the file and
    removes it, and snapshots left behind are removed after SNAPSHOT_TTL.
    """
    folder = ledger.path.parent / SNAPSHOTS
    folder.mkdir(mode=0o700, exist_ok=True)
    cutoff = time.time() - SNAPSHOT_TTL
    for stale in folder.glob("*.parquet"):
        with contextlib.suppress(OSError):
            if stale.stat().st_mtime < cutoff:
                stale.unlink()
    path = folder / f"{secrets.token_hex(12)}.parquet"
    rows = receipts.export_parquet(ledger, path, tenant_id)
    path.chmod(0o600)
    return path, rows


def export(conn: Any, out: Path) -> int:
    """Write the copy's receipts to a Parquet file (before lock_down); the rows written."""
    literal = str(out).replace("'", "''")
    cur = conn.execute(f"COPY (SELECT * FROM receipts ORDER BY seq) TO '{literal}' (FORMAT parquet)")
    return int(cur.fetchone()[0])


def lock_down(conn: Any) -> None:
    """From here on the connection cannot reach anything but the rows it holds."""
    conn.execute("SET threads = 1")
    conn.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
    conn.execute("SET enable_external_access = false")
    conn.execute("SET lock_configuration = true")


def query(conn: Any, sql: str, *, max_rows: int = MAX_ROWS, timeout: float = TIMEOUT) -> Result:
    """Run one SELECT on a locked-down copy; QueryRejected for anything else or any error."""
    import duckdb

    check_select(sql)
    timer = threading.Timer(timeout, conn.interrupt)
    timer.start()
    try:
        cur = conn.execute(sql)
        rows = cur.fetchmany(max_rows + 1)
        description = cur.description or []
    except duckdb.InterruptException as e:
        raise QueryRejected(f"query stopped: it ran longer than {timeout:g} s") from e
    except duckdb.Error as e:
        raise QueryRejected(f"query failed: {e}") from e
    finally:
        timer.cancel()
    return Result([d[0] for d in description], [str(d[1]) for d in description],
                  [[_json_value(v) for v in row] for row in rows[:max_rows]], len(rows) > max_rows)


def check_select(sql: str) -> None:
    """Accept exactly one SELECT statement (DuckDB's own parser decides what a statement is)."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryRejected(f"sql does not parse: {e}") from e
    if len(statements) != 1:
        raise QueryRejected(f"sql must be exactly one SELECT statement, not {len(statements)} statements")
    if statements[0].type != duckdb.StatementType.SELECT:
        kind = str(statements[0].type).rsplit(".", 1)[-1]
        raise QueryRejected(f"sql must be a read-only SELECT statement, not {kind}")


def _memory() -> Any:
    import duckdb

    return duckdb.connect(":memory:", config=dict(receipts.CONFIG))


def _copy(conn: Any, source: str, tenant_id: str | None) -> None:
    # No constraints: a tampered ledger (a duplicated id, say) must still copy, to be verified.
    where = "WHERE tenant_id = $tenant" if tenant_id is not None else ""
    conn.execute(f"CREATE TABLE receipts AS SELECT {receipts.COLUMNS} FROM {source} {where}",
                 {"tenant": tenant_id} if tenant_id is not None else {})


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID | dt.timedelta):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)
