"""The auditors' ledger: receipts of record, sealed into DuckLake in tenant_seq order, exactly once.

The state store is the system of record (fibric/store/receipt_store.py); this is
the copy auditors query with SQL. A DuckLake lake keeps the receipts as
Parquet files, partitioned by tenant (`<data path>/main/receipts/
tenant_id=<id>/*.parquet`), with a catalog that says which files make up the
current snapshot. So a tenant's SQL reads that tenant's files and nothing
else (fibric/store/audit_sql.py), without copying a row, and an auditor's
own DuckDB can attach the same lake.

Sealing (fibric/controller/sealer.py) inserts each batch in one DuckLake
commit, so what is sealed of a tenant is always a prefix of its chain: the
high-water mark of a tenant is the largest tenant_seq sealed, read from the
lake itself, and a crash between two batches loses nothing and repeats
nothing. Small batches make small files; `maintain` merges them and removes
the files no snapshot younger than `keep` reads.

The catalog is a DuckDB file in the data dir on the embedded default (held
by the serving process) and a PostgreSQL catalog for replicas. DuckLake and
its catalog drivers are loaded from their pip wheels (duckdb-extension-*),
pinned to the DuckDB release; nothing is ever downloaded.
"""

from __future__ import annotations

import importlib
import json
import os
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fibric import errors, settings
from fibric.store import filemodes, ledger_access, receipt_store
from fibric.store import model_calls as calls_record

CATALOG_FILE = "ledger.ducklake"  # beside state.db
DATA_DIR = "ledger"
TABLE = "lake.receipts"
CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "autoinstall_known_extensions": False, "autoload_known_extensions": False}
SCHEMA = """
CREATE TABLE lake.receipts (
    seq BIGINT, tenant_seq BIGINT, id VARCHAR, reseller_id VARCHAR, tenant_id VARCHAR,
    operator_id VARCHAR, operator VARCHAR, capability VARCHAR, entity_key VARCHAR, args JSON,
    triggered_by_event VARCHAR, plan_id VARCHAR, run_id VARCHAR, proposed_by VARCHAR, decision VARCHAR,
    rule VARCHAR, policy JSON, policy_id VARCHAR, policy_sha256 VARCHAR, idempotency_key VARCHAR,
    outcome VARCHAR, approver VARCHAR, detail JSON, disposed_at TIMESTAMP, prev_hash VARCHAR,
    hash VARCHAR, decided_by JSON, request_id VARCHAR, trace_id VARCHAR, decision_input JSON
)"""
# Columns added to a table after the first release: (table, column, type), added to an older lake on open.
ADDED_COLUMNS = (("receipts", "decided_by", "JSON"), ("receipts", "request_id", "VARCHAR"),
                 ("receipts", "trace_id", "VARCHAR"), ("receipts", "decision_input", "JSON"))
CALLS_TABLE = "lake.model_calls"  # model call records (fibric/store/model_calls.py), sealed beside receipts
CALLS_SCHEMA = """
CREATE TABLE lake.model_calls (
    id VARCHAR, reseller_id VARCHAR, tenant_id VARCHAR, run_id VARCHAR, operator_id VARCHAR,
    plan_id VARCHAR, route VARCHAR, model VARCHAR, mode VARCHAR, attempt INTEGER, request JSON,
    answer JSON, http_status INTEGER, finish_reason VARCHAR, prompt_tokens BIGINT,
    completion_tokens BIGINT, total_tokens BIGINT, latency_ms DOUBLE, outcome VARCHAR, error VARCHAR,
    started_at TIMESTAMP
)"""
_CALL_TYPES = {"attempt": "INTEGER", "http_status": "INTEGER", "prompt_tokens": "BIGINT",
               "completion_tokens": "BIGINT", "total_tokens": "BIGINT", "latency_ms": "DOUBLE",
               "started_at": "TIMESTAMP"}
_CALL_ROW = json.dumps({f: _CALL_TYPES.get(f, "VARCHAR") for f in calls_record.FIELDS})
_CALL_COLUMNS = ", ".join(calls_record.FIELDS)
_INSERT_CALLS = (f"INSERT INTO {CALLS_TABLE} ({_CALL_COLUMNS}) SELECT {_CALL_COLUMNS} FROM "
                 f"(SELECT unnest(from_json(?::JSON, '[{_CALL_ROW}]'), recursive := true))")
_TYPES = {"seq": "BIGINT", "tenant_seq": "BIGINT", "at": "TIMESTAMP"}  # the rest arrive as text
_ROW = json.dumps({("disposed_at" if f == "at" else f): _TYPES.get(f, "VARCHAR")
                   for f in receipt_store.FIELDS})
# A batch is one JSON parameter, unnested into rows in SQL: binding thousands of rows one
# parameter at a time (executemany) costs far more than the insert itself.
_INSERT = (f"INSERT INTO {TABLE} ({receipt_store.COLUMNS}) SELECT {receipt_store.COLUMNS} FROM "
           f"(SELECT unnest(from_json(?::JSON, '[{_ROW}]'), recursive := true))")


def extension(name: str) -> str:
    """The path of a DuckDB extension shipped in its pip wheel (duckdb-extension-<name>)."""
    import duckdb

    module = importlib.import_module(f"duckdb_extension_{name}")
    folder = Path(module.__file__ or "").parent / "extensions" / f"v{duckdb.__version__}"
    path = folder / f"{name}.duckdb_extension"
    if not path.is_file():
        raise errors.PermanentError(f"the DuckDB extension {name} for DuckDB {duckdb.__version__} is not "
                                    f"installed (pip package duckdb-extension-{name.replace('_', '-')})")
    return str(path)


class SealedLedger:
    """One DuckLake lake of receipts; seal from one writer, read from any thread."""

    def __init__(self, data_dir: Path, *, catalog: str | None = None, data_path: str | None = None,
                 schema: str | None = None, read_only: bool = False) -> None:
        """`catalog` is DuckLake's ("postgres:dbname=..." for replicas, its tables in `schema`);
        default: a file in `data_dir`. `data_path` is where its Parquet files go."""
        self.data_dir = Path(data_dir)
        self.catalog = catalog or str(self.data_dir / CATALOG_FILE)
        self.data_path = data_path or str(self.data_dir / DATA_DIR)
        self.schema = schema
        self.read_only = read_only
        self._lock = threading.Lock()  # one writer: marks and seals
        self._opening = threading.Lock()
        self._conn: Any = None
        self._local = threading.local()
        self._marks: dict[str, int] | None = None
        self.token: str | None = None  # the local admin's, while this process holds the catalog

    # --- writing (the sealer) -------------------------------------------------------------

    @property
    def shared(self) -> bool:
        """Whether replicas share this lake (its catalog in PostgreSQL): one of them seals it."""
        return self.catalog.startswith("postgres:")

    def forget_marks(self) -> None:
        """Read the marks from the lake again at the next pass (another replica may have sealed)."""
        with self._lock:
            self._marks = None

    def marks(self) -> dict[str, int]:
        """Each tenant's largest sealed tenant_seq: its chain is sealed up to there, and no further."""
        with self._lock:
            if self._marks is None:
                rows = self._cursor().execute(
                    f"SELECT tenant_id, max(tenant_seq) FROM {TABLE} GROUP BY tenant_id").fetchall()
                self._marks = {str(t): int(n) for t, n in rows}
            return dict(self._marks)

    def seal(self, batch: Sequence[receipt_store.Receipt]) -> int:
        """Append receipts (each tenant's next ones, in tenant_seq order) in one commit; how many.

        A receipt at or below its tenant's mark is skipped (sealed already), and
        one that would leave a gap is refused: the lake holds a prefix of every
        chain or nothing of it.
        """
        with self._lock:
            marks = dict(self._marks if self._marks is not None else {})
            if self._marks is None:
                raise errors.PermanentError("read marks() before sealing")
            rows = []
            for item in batch:
                mark = marks.get(item.tenant_id, 0)
                if item.tenant_seq <= mark:
                    continue
                if item.tenant_seq != mark + 1:
                    raise errors.PermanentError(
                        f"sealing tenant {item.tenant_id} at tenant_seq {item.tenant_seq} would skip "
                        f"{mark + 1}..{item.tenant_seq - 1}")
                marks[item.tenant_id] = item.tenant_seq
                rows.append(_row(item))
            if not rows:
                return 0
            _insert(self._cursor(), _INSERT, rows)
            self._marks = marks
            return len(rows)

    def seal_calls(self, batch: Sequence[calls_record.StoredCall]) -> int:
        """Append model call records in one commit, skipping any the lake has already (a pass that
        crashed after its commit, before the store noted it); how many were added."""
        if not batch:
            return 0
        with self._lock:
            cur = self._cursor()
            oldest = _lake_time(min(c.started_at for c in batch))
            present = {str(r[0]) for r in cur.execute(
                f"SELECT id FROM {CALLS_TABLE} WHERE started_at >= ? AND list_contains(?, id)",
                [oldest, [c.id for c in batch]]).fetchall()}
            rows = [_call_row(c) for c in batch if c.id not in present]
            if rows:
                _insert(cur, _INSERT_CALLS, rows)
            return len(rows)

    def maintain(self, *, keep: timedelta = timedelta(minutes=10)) -> None:
        """Merge small files; remove files no snapshot younger than `keep` reads (a query may still)."""
        seconds = int(keep.total_seconds())
        with self._lock:
            cur = self._cursor()
            cur.execute("CALL ducklake_merge_adjacent_files('lake')")
            before = f"now() - INTERVAL {seconds} SECOND"
            cur.execute(f"CALL ducklake_expire_snapshots('lake', older_than => {before})")
            cur.execute(f"CALL ducklake_cleanup_old_files('lake', older_than => {before})")

    # --- reading ------------------------------------------------------------------------

    def files(self, tenant_id: str | None = None, *, table: str = "receipts") -> list[str]:
        """The Parquet files of the current snapshot of `table` (receipts or model_calls): one
        tenant's, or every tenant's."""
        cur = self._cursor()
        if not cur.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = 'lake'"
                           " AND table_name = ?", [table]).fetchone()[0]:
            return []  # a lake of an earlier release, opened read-only: nothing of that table yet
        rows = cur.execute("SELECT data_file FROM ducklake_list_files('lake', ?)", [table]).fetchall()
        found = [str(r[0]) for r in rows]
        if tenant_id is None:
            return found
        part = f"{os.sep}tenant_id={tenant_id}{os.sep}"
        return [f for f in found if part in f]

    def rows(self, tenant_id: str, batch: int = 10_000) -> Iterator[tuple[Any, ...]]:
        """The tenant's sealed rows in tenant_seq order (what `audit verify` compares with the record)."""
        cur = self._cursor().cursor()
        try:
            cur.execute(f"SELECT {receipt_store.COLUMNS} FROM {TABLE} "
                        "WHERE tenant_id = ? ORDER BY tenant_seq, seq", [tenant_id])
            while chunk := cur.fetchmany(batch):
                yield from chunk
        finally:
            cur.close()

    def count(self) -> int:
        return int(self._cursor().execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])

    def ping(self) -> int:
        """The lake's current snapshot: it opens and its catalog answers (GET /readyz's check)."""
        return int(self._cursor().execute("FROM lake.current_snapshot()").fetchone()[0])

    def close(self) -> None:
        with self._lock, self._opening:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
                if self.token is not None:
                    ledger_access.withdraw(Path(self.catalog))
                    self.token = None
            self._local = threading.local()
            self._marks = None

    def _cursor(self) -> Any:
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            with self._opening:  # one connection: DuckDB attaches a catalog file once per process
                if self._conn is None:
                    self._conn = self._open()
                cursor = self._local.cursor = self._conn.cursor()
        return cursor

    def _open(self) -> Any:
        import duckdb

        local = not self.shared
        if local:
            filemodes.make_private_dir(self.data_dir)
            filemodes.make_private_dir(Path(self.data_path))
        conn = duckdb.connect(":memory:", config=dict(CONFIG))
        try:
            conn.execute(f"LOAD '{extension('ducklake')}'")
            if not local:
                conn.execute(f"LOAD '{extension('postgres_scanner')}'")
            options = [f"DATA_PATH {_literal(self.data_path + os.sep)}", "DATA_INLINING_ROW_LIMIT 0"]
            if self.schema:
                options.append(f"METADATA_SCHEMA {_literal(self.schema)}")
            if self.read_only:
                options.append("READ_ONLY")
            conn.execute(f"ATTACH {_literal('ducklake:' + self.catalog)} AS lake ({', '.join(options)})")
            tables = {str(r[0]) for r in conn.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = 'lake'").fetchall()}
            for name, schema, table in (("receipts", SCHEMA, TABLE),
                                        ("model_calls", CALLS_SCHEMA, CALLS_TABLE)):
                if name not in tables and not self.read_only:  # a lake of an earlier release gains its table
                    conn.execute(schema)
                    conn.execute(f"ALTER TABLE {table} SET PARTITIONED BY (tenant_id)")
            if not self.read_only:  # ... and the columns added since
                for name, column, kind in ADDED_COLUMNS:
                    conn.execute(f"ALTER TABLE lake.{name} ADD COLUMN IF NOT EXISTS {column} {kind}")
            if local and Path(self.catalog).exists():
                filemodes.restrict(Path(self.catalog))
            if local and not self.read_only:
                self.token = ledger_access.publish(Path(self.catalog))
        except duckdb.Error as e:
            conn.close()
            if "lock" in str(e).lower():
                raise LedgerHeld(
                    f"{self.catalog} is held by another process (is `fibric serve` running?)") from e
            raise errors.TemporaryError(f"sealed receipt ledger unavailable: {e}") from e
        return conn


def open_for(config: settings.StoreSettings, *, read_only: bool = False) -> SealedLedger:
    """The sealed ledger `config` names: a DuckLake of this data dir, or the one replicas share."""
    shared = (config.ledger_catalog or "").startswith("postgres:")
    if shared and not config.ledger_data_path:
        raise errors.PermanentError(
            "FIBRIC_LEDGER_CATALOG names a shared (PostgreSQL) catalog, so FIBRIC_LEDGER_DATA_PATH must name "
            "the folder its Parquet files go to, the same one for every replica (docs/receipts.md#replicas)")
    return SealedLedger(config.data_dir, catalog=config.ledger_catalog, data_path=config.ledger_data_path,
                        schema=config.ledger_schema, read_only=read_only)


def seal_pending(ledger: receipt_store.StoreLedger, lake: SealedLedger, *,
                 batch: int = 5_000) -> list[receipt_store.Receipt]:
    """One sealing pass: each tenant's receipts of record past its mark (up to `batch`), sealed; which.

    Blocking: the state store's reads and one DuckLake commit.
    """
    marks = lake.marks()
    pending: list[receipt_store.Receipt] = []
    for tenant_id, head in ledger.heads().items():
        mark = marks.get(tenant_id, 0)
        if head > mark:
            pending += ledger.after(tenant_id, mark, batch)
    lake.seal(pending)
    return pending


def seal_pending_calls(state: Any, lake: SealedLedger, *, batch: int = 1_000) -> int:
    """One sealing pass of model call records: up to `batch` unsealed ones into the lake, then noted
    as sealed in the store; how many. Blocking."""
    pending = calls_record.unsealed(state, batch)
    lake.seal_calls(pending)
    calls_record.mark_sealed(state, [c.id for c in pending])
    return len(pending)


def rows_in(files: Sequence[str], tenant_id: str, batch: int = 10_000) -> Iterator[tuple[Any, ...]]:
    """A tenant's sealed rows in tenant_seq order, read from the lake's files (the local admin's view)."""
    import duckdb

    if not files:
        return
    conn = duckdb.connect(":memory:", config=dict(CONFIG))
    try:
        listed = ", ".join(_literal(f) for f in files)
        cur = conn.execute(f"SELECT {receipt_store.COLUMNS} FROM {parquet(listed)}"
                           " WHERE tenant_id = ? ORDER BY tenant_seq, seq", [tenant_id])
        while chunk := cur.fetchmany(batch):
            yield from chunk
    finally:
        conn.close()


class LedgerHeld(errors.TemporaryError):
    """Another process (the server) holds the ledger's catalog; ask it for the files instead."""


def _insert(cur: Any, statement: str, rows: list[dict[str, Any]]) -> None:
    """One batch of rows (one JSON parameter, unnested by `statement`) in one lake commit."""
    cur.execute("BEGIN")
    try:
        cur.execute(statement, [json.dumps(rows, separators=(",", ":"))])
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise


def _lake_time(moment: datetime) -> datetime:
    """The lake's TIMESTAMP columns hold naive UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def _row(item: receipt_store.Receipt) -> dict[str, Any]:
    """One receipt as an object of _ROW: JSON fields as their text, the time as naive UTC ISO text."""
    values: dict[str, Any] = {}
    for name in receipt_store.FIELDS:
        value = getattr(item, name)
        if name in receipt_store.JSON_FIELDS:
            value = receipt_store.stored(name, value)
        elif name == "at":
            value = _lake_time(value).isoformat(timespec="microseconds")
        values["disposed_at" if name == "at" else name] = value
    return values


def _call_row(call: calls_record.StoredCall) -> dict[str, Any]:
    """One model call record as an object of _CALL_ROW: JSON as its text, the time as naive UTC text."""
    values: dict[str, Any] = {}
    for name in calls_record.FIELDS:
        value = getattr(call, name)
        if name in ("request", "answer"):
            value = None if value is None else json.dumps(value, separators=(",", ":"))
        elif name == "started_at":
            value = _lake_time(value).isoformat(timespec="microseconds")
        values[name] = value
    return values


def parquet(listed: str) -> str:
    """A read of sealed Parquet files (`listed`: their quoted paths): files written before a column
    was added (ADDED_COLUMNS) read it as null."""
    return f"read_parquet([{listed}], hive_partitioning = false, union_by_name = true)"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
