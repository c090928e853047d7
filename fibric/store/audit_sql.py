"""Auditors' read-only SQL over receipts: the sealed ledger's Parquet files, locked down, one SELECT.

An auditor's SQL runs in a private in-memory DuckDB whose `receipts` is a
view over the Parquet files of the sealed ledger that hold the rows the
caller may see (one tenant's partition, or every tenant's for the local
admin; fibric/store/sealed.py lists them from the lake's catalog), and
`model_calls` one over the sealed model call records alike, so a receipt's
run joins to what its model was asked. Nothing
is copied per query: the files are read where they lie, and DuckDB reads
only the columns and row groups a query needs.

Before any SQL of the auditor's runs, the connection is locked down: every
file but those listed out of reach (`allowed_paths`), external access
(network, ATTACH, extensions) off, configuration locked, one thread, and
QUERY_MEMORY of working memory with nowhere to spill; only a single SELECT
statement is accepted, and a query over its time budget is interrupted. SQL
naming other schemas, catalogs or `duckdb_*` metadata finds nothing more.

The answer is bounded in rows and in bytes without ever being built whole:
the auditor's SELECT runs as a subquery of one that turns every value into
something JSON can hold (docs/receipts.md#query-results: DuckDB renders
times, decimals and blobs as text, so no value needs a Python library to
convert) and keeps a running lower bound of the rows' JSON size; rows past
the byte budget reach Python as NULLs, so a query of a gigabyte costs one
DuckDB vector and a few MiB of Python, and Python, counting exactly, stops
there.

DuckDB's memory limit covers its buffer manager, not a single value a scalar
function builds (`repeat('x', 10^9)` takes its gigabyte, and more, whatever
the limit), and its interrupt is not checked inside one function call. So a
tenant's query (`query_ledger` with `workers`, what the API passes) runs in a
worker process capped in memory and killed past its time budget
(fibric/store/query_worker.py); the local admin's runs here.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from fibric import errors
from fibric.store import model_calls, receipt_store, sealed

MAX_ROWS = 10_000
MAX_RESPONSE_BYTES = 4 * 1024 * 1024  # a result's whole JSON document: columns, rows and counts
TIMEOUT = 10.0  # seconds
QUERY_MEMORY = 256 * 1024 * 1024  # DuckDB's working memory for a query, beyond the copy it holds
SNAPSHOTS = "audit-snapshots"  # folder beside the ledger
SNAPSHOT_TTL = 3600.0  # seconds
OVERTIME = "query stopped: it ran longer than {timeout:g} s"  # what a query over its time budget is told

Truncation = Literal["max_rows", "max_bytes"]  # the limit that cut a result short

_BATCH = 256  # rows per fetch: past the byte budget they arrive as NULLs, so a batch stays small
_NO_BYTE_CAP = 2**62
_NUMBERS = frozenset({"boolean", "tinyint", "smallint", "integer", "bigint", "hugeint", "utinyint",
                      "usmallint", "uinteger", "ubigint", "uhugeint", "float", "double"})
_TIMESTAMPS = frozenset({"timestamp", "timestamp_s", "timestamp_ms", "timestamp_ns"})
_ISO = r"'^([0-9]{4,}-[0-9]{2}-[0-9]{2}) ([0-9:.]+)$'"  # DuckDB's text of a timestamp in years 1-9999+


class QueryRejected(errors.PermanentError):
    """The auditor's SQL is not one read-only SELECT, or failed; the message says why."""


@dataclass(frozen=True)
class Result:
    """A query's answer, its rows already JSON: what POST /v1/receipts/query sends, as it sends it."""

    columns: list[str]
    types: list[str]  # DuckDB's names: BIGINT, TIMESTAMP WITH TIME ZONE, STRUCT(a INTEGER)[], ...
    row_json: list[bytes]  # one JSON array per row, values as docs/receipts.md#query-results says
    truncated: Truncation | None = None  # the limit that left rows out, if one did

    @property
    def rows(self) -> list[list[Any]]:
        return [json.loads(row) for row in self.row_json]

    def document(self) -> bytes:
        """The `receipt_query` object (schemas.ReceiptQueryResult); query() keeps it within max_bytes."""
        return b"".join([_head(self.columns, self.types), b",".join(self.row_json),
                         _tail(len(self.row_json), self.truncated)])

    @classmethod
    def from_document(cls, body: Mapping[str, Any]) -> Result:
        """A result as the API sent it (`fibric audit sql` through an API key)."""
        reason: Truncation | None = None
        if body.get("truncated"):
            reason = "max_bytes" if body.get("truncated_reason") == "max_bytes" else "max_rows"
        return cls([c["name"] for c in body["columns"]], [c["type"] for c in body["columns"]],
                   [_dumps(row) for row in body["rows"]], reason)


class _Spares:
    """Fresh in-memory DuckDB databases, made ahead of need: making one takes 15-20 ms.

    Each query still gets a database of its own, never used before and closed
    after (its settings, allowed_paths first, are database-wide); only the
    making moves off the query's path, to a thread that keeps `keep` ready.
    """

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._ready: list[Any] = []
        self._lock = threading.Lock()
        self._filling = False

    def take(self) -> Any:
        with self._lock:
            conn = self._ready.pop() if self._ready else None
            start = not self._filling
            self._filling = True
        if start:
            threading.Thread(target=self._fill, name="fibric-audit-spares", daemon=True).start()
        return conn if conn is not None else new_database()

    def _fill(self) -> None:
        try:
            while True:
                with self._lock:
                    if len(self._ready) >= self.keep:
                        return
                conn = new_database()
                with self._lock:
                    self._ready.append(conn)
        finally:
            with self._lock:
                self._filling = False


class Workers(Protocol):
    """Where a tenant's query runs out of the server's process (query_worker.Pool)."""

    def run(self, files: Sequence[str], calls: Sequence[str], sql: str, *, max_rows: int,
            max_bytes: int | None, timeout: float) -> Result: ...


def new_database(threads: int | None = None) -> Any:
    """A fresh in-memory DuckDB (on `threads` threads from the start, if given), not yet locked down."""
    import duckdb

    config = dict(sealed.CONFIG)
    if threads is not None:
        config["threads"] = threads
    return duckdb.connect(":memory:", config=config)


_spares = _Spares()


def over_files(files: Sequence[str], *, calls: Sequence[str] = (), threads: int = 1,
               database: Any | None = None) -> Any:
    """A private in-memory DuckDB whose `receipts` is a view over these Parquet files, and
    `model_calls` one over the `calls` files of the model call records, locked down.

    A tenant's query (the API) runs on one thread, so one tenant's scan never takes
    every core; the local admin's (`fibric audit sql`) may pass the machine's. The
    database is `database` (new_database(), never used before) or one of the spares.
    """
    conn = database if database is not None else _spares.take()
    try:
        if files or calls:
            conn.execute(f"SET allowed_paths = [{', '.join(_literal(f) for f in [*files, *calls])}]")
        for name, listed, columns, schema in (
                ("receipts", files, receipt_store.COLUMNS, sealed.SCHEMA),
                ("model_calls", calls, ", ".join(model_calls.FIELDS), sealed.CALLS_SCHEMA)):
            if listed:
                conn.execute(f"CREATE VIEW {name} AS SELECT {columns} FROM "
                             f"{sealed.parquet(', '.join(_literal(f) for f in listed))}")
            else:  # nothing sealed yet: the same columns, no rows
                conn.execute(schema.replace(f"lake.{name}", name))
        lock_down(conn, threads=threads)
    except BaseException:
        conn.close()
        raise
    return conn


def query_ledger(lake: sealed.SealedLedger, tenant_id: str, sql: str, *, max_rows: int = MAX_ROWS,
                 max_bytes: int | None = MAX_RESPONSE_BYTES, timeout: float | None = None,
                 workers: Workers | None = None) -> Result:
    """Run an auditor's SELECT over one tenant's sealed receipts: in one of `workers`' processes
    (a tenant's, through the API), or in this one (None). `timeout` defaults to TIMEOUT."""
    check_select(sql)  # before opening anything
    timeout = TIMEOUT if timeout is None else timeout
    files, calls = lake.files(tenant_id), lake.files(tenant_id, table="model_calls")
    if workers is not None:
        return workers.run(files, calls, sql, max_rows=max_rows, max_bytes=max_bytes, timeout=timeout)
    conn = over_files(files, calls=calls)
    try:
        return query(conn, sql, max_rows=max_rows, max_bytes=max_bytes, timeout=timeout)
    finally:
        conn.close()


def snapshot(lake: sealed.SealedLedger, tenant_id: str | None = None) -> tuple[Path, int]:
    """Write the sealed receipts to one Parquet file in the data dir, for the local admin; (path, rows).

    The folder is the owner's only (0700); the admin's CLI reads the file and
    removes it, and snapshots left behind are removed after SNAPSHOT_TTL.
    """
    folder = lake.data_dir / SNAPSHOTS
    folder.mkdir(mode=0o700, exist_ok=True)
    cutoff = time.time() - SNAPSHOT_TTL
    for stale in folder.glob("*.parquet"):
        with contextlib.suppress(OSError):
            if stale.stat().st_mtime < cutoff:
                stale.unlink()
    path = folder / f"{secrets.token_hex(12)}.parquet"
    rows = export(lake.files(tenant_id), path)
    path.chmod(0o600)
    return path, rows


def export(files: Sequence[str], out: Path) -> int:
    """Copy the receipts of these sealed files into one Parquet file, in ledger order; the rows written."""
    import duckdb

    conn = duckdb.connect(":memory:", config=dict(sealed.CONFIG))
    try:
        if files:
            source = sealed.parquet(", ".join(_literal(f) for f in files))
        else:  # nothing sealed: an empty file with the columns
            conn.execute(sealed.SCHEMA.replace("lake.receipts", "receipts"))
            source = "receipts"
        cur = conn.execute(f"COPY (SELECT {receipt_store.COLUMNS} FROM {source} ORDER BY seq)"
                           f" TO {_literal(str(out))} (FORMAT parquet)")
        return int(cur.fetchall()[0][0])
    finally:
        conn.close()


def lock_down(conn: Any, *, threads: int = 1) -> None:
    """From here on the connection cannot reach anything but the rows it holds, nor grow past them much."""
    held = conn.execute("SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory()").fetchone()[0]
    conn.execute(f"SET threads = {max(1, int(threads))}")
    conn.execute(f"SET memory_limit = '{int(held) + QUERY_MEMORY}B'")
    conn.execute("SET temp_directory = ''")  # never spill a tenant's rows to disk (the cwd's .tmp)
    conn.execute("SET TimeZone = 'UTC'")  # the same answers whatever the server's zone
    conn.execute("SET enable_external_access = false")
    conn.execute("SET lock_configuration = true")


def query(conn: Any, sql: str, *, max_rows: int = MAX_ROWS, max_bytes: int | None = MAX_RESPONSE_BYTES,
          timeout: float = TIMEOUT) -> Result:
    """Run one SELECT on a locked-down copy: its first rows, up to max_rows and max_bytes of document.

    `max_bytes` bounds Result.document() (None: no byte cap, for the local
    admin). QueryRejected for anything but one SELECT, any error, or a query
    over its time or memory budget.
    """
    import duckdb

    statement = _statement(sql)
    timer = threading.Timer(timeout, conn.interrupt)
    timer.start()
    try:
        relation = conn.sql(statement)  # binds it, runs nothing: the columns and their types
        columns, types = list(relation.columns), list(relation.types)
        names = [str(t) for t in types]
        budget = _NO_BYTE_CAP
        if max_bytes is not None:
            budget = max_bytes - len(_head(columns, names)) - len(_tail(max_rows, "max_bytes"))
            if budget < len("[]"):
                raise QueryRejected(f"the result's {len(columns)} columns alone take more than the "
                                    f"{max_bytes} bytes an answer may hold: select fewer columns")
        rows, truncated = _fetch(conn.execute(_wrapped(statement, types, budget)), max_rows, budget)
    except duckdb.InterruptException as e:
        raise QueryRejected(OVERTIME.format(timeout=timeout)) from e
    except duckdb.OutOfMemoryException as e:
        raise QueryRejected(
            f"query stopped: it needs more than {QUERY_MEMORY // 2**20} MiB of working memory; "
            f"have it read fewer rows or shorter values") from e
    except duckdb.Error as e:
        raise QueryRejected(f"query failed: {e}") from e
    finally:
        timer.cancel()
    return Result(columns, names, rows, truncated)


def check_select(sql: str) -> None:
    """Accept exactly one SELECT statement (DuckDB's own parser decides what a statement is)."""
    _statement(sql)


def _statement(sql: str) -> str:
    """The one SELECT statement in `sql`, as text that can stand inside parentheses."""
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
    # The closing parenthesis goes on a line of its own, after any trailing -- comment.
    return re.sub(r"[\s;]+\Z", "", statements[0].query)


def _fetch(cur: Any, max_rows: int, budget: int) -> tuple[list[bytes], Truncation | None]:
    """The rows of a _wrapped query as JSON arrays, as many as fit max_rows and `budget` bytes."""
    rows: list[bytes] = []
    used = 0
    while batch := cur.fetchmany(_BATCH):
        for row in batch:
            if len(rows) == max_rows:
                return rows, "max_rows"
            if row[-1] > budget:  # the running lower bound: this row cannot fit, and was not sent
                return rows, "max_bytes"
            data = _dumps(row[:-1])
            used += len(data) + (1 if rows else 0)  # and a comma
            if used > budget:
                return rows, "max_bytes"
            rows.append(data)
    return rows, None


def _wrapped(statement: str, types: Sequence[Any], budget: int) -> str:
    """SQL giving the statement's rows rendered for JSON, each with the running size estimate.

    Columns are renamed by position (c0, c1, ...), so duplicate names are no
    trouble; the projections and the streaming window keep the statement's
    row order.
    """
    names = [f"c{n}" for n in range(len(types))]
    rendered = ", ".join(f"{_render(name, t, 0)} AS {name}" for name, t in zip(names, types, strict=True))
    estimates = (str(_estimate(name, t, 0)) for name, t in zip(names, types, strict=True))
    size = " + ".join([str(len(names) + 1), *estimates])
    kept = ", ".join(f"CASE WHEN fibric_total <= {budget} THEN {name} END" for name in names)
    return (f"SELECT {kept}, fibric_total FROM (SELECT *, sum(fibric_size) OVER "
            f"(ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS fibric_total FROM ("
            f"SELECT *, {size} AS fibric_size FROM (SELECT {rendered} FROM ({statement}\n) "
            f"AS q({', '.join(names)})) AS r) AS s) AS t")


def _render(x: str, t: Any, depth: int) -> str:
    """SQL for `x` (of DuckDB type `t`) as values Python holds without help and JSON can carry."""
    kind = t.id
    if _plain(t):
        return x
    if kind in ("list", "array"):
        e = f"e{depth}"
        return f"list_transform({x}, lambda {e}: {_render(e, t.children[0][1], depth + 1)})"
    if kind == "struct":
        fields = t.children
        if all(name == "" for name, _ in fields):  # ROW(...): an array
            items = [_render(f"struct_extract({x}, {n})", ft, depth) for n, (_, ft) in enumerate(fields, 1)]
            return f"CASE WHEN {x} IS NULL THEN NULL ELSE row({', '.join(items)}) END"
        items = [f"{_ident(name)} := {_render(f'struct_extract({x}, {_literal(name)})', ft, depth)}"
                 for name, ft in fields]
        return f"CASE WHEN {x} IS NULL THEN NULL ELSE struct_pack({', '.join(items)}) END"
    if kind == "map":  # an object: keys as text
        (_, key), (_, value) = t.children
        e = f"e{depth}"
        k = _render(f"struct_extract({e}, 'key')", key, depth + 1)
        v = _render(f"struct_extract({e}, 'value')", value, depth + 1)
        return (f"map_from_entries(list_transform(map_entries({x}), lambda {e}: "
                f"struct_pack(key := CAST({k} AS VARCHAR), value := {v})))")
    if kind == "blob":
        return f"lower(hex({x}))"
    if kind in _TIMESTAMPS:
        return f"regexp_replace(CAST({x} AS VARCHAR), {_ISO}, '\\1T\\2')"
    if kind == "timestamp with time zone":
        return f"regexp_replace(CAST(timezone('UTC', {x}) AS VARCHAR), {_ISO}, '\\1T\\2Z')"
    return f"CAST({x} AS VARCHAR)"  # DECIMAL, DATE, TIME, INTERVAL, UUID, ENUM, BIGNUM, UNION, ...


def _plain(t: Any) -> bool:
    """Whether DuckDB's Python values of type `t` are JSON-ready as they are."""
    kind = t.id
    if kind in _NUMBERS or kind == "varchar":
        return True
    if kind in ("list", "array"):
        return _plain(t.children[0][1])
    if kind == "struct":
        return all(_plain(ft) for _, ft in t.children)
    if kind == "map":
        (_, key), (_, value) = t.children
        return bool(key.id == "varchar" and _plain(value))
    return False


def _estimate(x: str, t: Any, depth: int) -> int | str:
    """A lower bound (a number, or SQL) of the JSON bytes of `x`, a value of type `t` as _render made it."""
    kind = t.id
    if kind in ("float", "double"):
        return 3  # 0.0
    if kind in _NUMBERS:
        return 1
    if kind in ("list", "array"):
        e = f"e{depth}"
        each = _estimate(e, t.children[0][1], depth + 1)
        if isinstance(each, int):
            return f"coalesce({each + 1} * len({x}) + 1, 4)"
        return f"coalesce(len({x}) + 1 + coalesce(list_sum(list_transform({x}, lambda {e}: {each})), 0), 4)"
    if kind == "struct":
        fields = t.children
        unnamed = all(name == "" for name, _ in fields)
        fixed = 1
        parts: list[str] = []
        for n, (name, ft) in enumerate(fields, 1):
            fixed += 1 if unnamed else len(_dumps(name)) + 2
            field = f"struct_extract({x}, {n if unnamed else _literal(name)})"
            each = _estimate(field, ft, depth)
            if isinstance(each, int):
                fixed += each
            else:
                parts.append(each)
        if not parts:
            return min(fixed, 4)  # or null
        return f"CASE WHEN {x} IS NULL THEN 4 ELSE {' + '.join([str(fixed), *parts])} END"
    if kind == "map":
        e = f"e{depth}"
        value = _estimate(f"struct_extract({e}, 'value')", t.children[1][1], depth + 1)
        return (f"(coalesce(list_sum(list_transform(map_entries({x}), lambda {e}: "
                f"strlen(struct_extract({e}, 'key')) + 4 + {value})), 0) + 1)")
    return f"coalesce(strlen({x}) + 2, 4)"  # text, with its quotes


def _head(columns: Sequence[str], types: Sequence[str]) -> bytes:
    listed = [{"name": name, "type": kind} for name, kind in zip(columns, types, strict=True)]
    return b'{"object":"receipt_query","columns":' + _dumps(listed) + b',"rows":['


def _tail(row_count: int, truncated: Truncation | None) -> bytes:
    rest = {"row_count": row_count, "truncated": truncated is not None, "truncated_reason": truncated}
    return b"]," + _dumps(rest)[1:]


def _dumps(value: Any) -> bytes:
    """Compact JSON, UTF-8; NaN and the infinities, which JSON lacks, as "NaN", "Infinity", "-Infinity"."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


