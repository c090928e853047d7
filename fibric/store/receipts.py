"""The receipt ledger: one append-only DuckDB row per disposed action, for auditors' SQL.

A receipt records what triggered an action, what was proposed, what the
policy decided and why, the idempotency key that keeps the action from ever
applying twice, and the outcome. This module can only append and read: no
code path updates or deletes a receipt. Each receipt carries its place in its
tenant's chain (`tenant_seq`, 1, 2, 3, ...), the hash of the tenant's previous
receipt (`prev_hash`) and its own (`hash`, SHA-256 of its canonical JSON), so
an edit, a deletion, a reordering or an insertion is detectable
(fibric/store/audit.py), and a signed checkpoint catches the rest
(fibric/store/checkpoint.py).

DuckDB is embedded: one connection per ledger, one cursor per thread (a
DuckDB connection is not shared between threads). The file is opened on first
use, so an API that is never asked for receipts never creates it. Extensions
are never installed or loaded at run time (JSON is built into the pinned
release).

Appends are serialised by one writer lock and keep each tenant's chain head
in memory: the process holding the DuckDB file is its only writer, so the
cache is authoritative. Appends waiting for the lock are written together, in
one INSERT and one commit, by whichever thread gets it (group commit). The
file records its schema version (`ledger_meta`); a file of another version is
refused with a message rather than extended with a chain that would not
verify. docs/receipts.md documents every column for auditors.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from fibric import errors, ids, timefmt
from fibric.store import filemodes, ledger_access, pages

GENESIS = "0" * 64  # prev_hash of a tenant's first receipt
DECISIONS = ("ALLOW", "ALERT", "BLOCK", "DEDUP")
OUTCOMES = ("applied", "failed", "refused", "deduplicated", "in_doubt")

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS receipts (
    seq BIGINT NOT NULL,               -- ledger-wide append order; lists are newest first by it
    tenant_seq BIGINT NOT NULL,        -- 1, 2, 3, ... within the tenant: the order of its hash chain
    id VARCHAR PRIMARY KEY,            -- rc_...
    reseller_id VARCHAR NOT NULL,
    tenant_id VARCHAR NOT NULL,
    operator_id VARCHAR NOT NULL,      -- op_...
    operator VARCHAR NOT NULL,         -- the operator's name when the receipt was written
    capability VARCHAR NOT NULL,
    entity_key VARCHAR NOT NULL,
    args JSON NOT NULL,                -- the proposed action's arguments
    triggered_by_event VARCHAR,        -- ev_...
    plan_id VARCHAR,                   -- pl_...
    run_id VARCHAR,                    -- run_...
    proposed_by VARCHAR NOT NULL,      -- "model" or "rules"
    decision VARCHAR NOT NULL,         -- ALLOW | ALERT | BLOCK | DEDUP
    rule VARCHAR,                      -- the policy rule that decided
    policy JSON NOT NULL,              -- the policy's whole answer: {"decision", "rule", ...}
    policy_id VARCHAR,                 -- pol_...
    policy_sha256 VARCHAR,             -- hash of the Rego source that decided
    idempotency_key VARCHAR NOT NULL,
    outcome VARCHAR NOT NULL,          -- applied | failed | refused | deduplicated | in_doubt
    approver VARCHAR,
    detail JSON,                       -- tool result or error, when there is one
    disposed_at TIMESTAMP NOT NULL,    -- UTC; the API's "at" ("at" is a keyword in SQL)
    prev_hash VARCHAR NOT NULL,        -- hash of the tenant's previous receipt (GENESIS for the first)
    hash VARCHAR NOT NULL              -- SHA-256 of this receipt's canonical JSON, prev_hash included
);
CREATE TABLE IF NOT EXISTS ledger_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
"""
_FIELDS = (
    "seq", "tenant_seq", "id", "reseller_id", "tenant_id", "operator_id", "operator", "capability",
    "entity_key", "args", "triggered_by_event", "plan_id", "run_id", "proposed_by", "decision", "rule",
    "policy", "policy_id", "policy_sha256", "idempotency_key", "outcome", "approver", "detail", "at",
    "prev_hash", "hash",
)
_COLUMNS = ", ".join("disposed_at" if f == "at" else f for f in _FIELDS)
_JSON_COLUMNS = frozenset({"args", "policy", "detail"})
_TYPES = {"seq": "BIGINT", "tenant_seq": "BIGINT", "at": "TIMESTAMP"}
_ROW = json.dumps({("disposed_at" if f == "at" else f): _TYPES.get(f, "VARCHAR") for f in _FIELDS})
_INSERT = f"INSERT INTO receipts ({_COLUMNS}) SELECT unnest(from_json(?, '[{_ROW}]'), recursive := true)"
# Never install or load an extension at run time (JSON and Parquet are built in).
CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "autoinstall_known_extensions": False, "autoload_known_extensions": False}
OPEN_WAIT = 5.0  # seconds to wait for a reader's shared lock on the file to go


@dataclass(frozen=True)
class NewReceipt:
    """What the executor knows about a disposed action; the ledger adds id, seq, time and hashes."""

    reseller_id: str
    tenant_id: str
    operator_id: str
    operator: str
    capability: str
    entity_key: str
    idempotency_key: str
    decision: str
    outcome: str
    proposed_by: str = "model"
    args: Mapping[str, Any] = field(default_factory=dict)
    rule: str | None = None
    policy: Mapping[str, Any] | None = None  # defaults to {"decision", "rule"}
    policy_id: str | None = None
    policy_sha256: str | None = None
    triggered_by_event: str | None = None
    plan_id: str | None = None
    run_id: str | None = None
    approver: str | None = None
    detail: Any = None


@dataclass(frozen=True)
class Receipt:
    seq: int
    tenant_seq: int
    id: str
    reseller_id: str
    tenant_id: str
    operator_id: str
    operator: str
    capability: str
    entity_key: str
    args: dict[str, Any]
    triggered_by_event: str | None
    plan_id: str | None
    run_id: str | None
    proposed_by: str
    decision: str
    rule: str | None
    policy: dict[str, Any]
    policy_id: str | None
    policy_sha256: str | None
    idempotency_key: str
    outcome: str
    approver: str | None
    detail: Any
    at: datetime
    prev_hash: str
    hash: str


class Ledger:
    """The receipts of every tenant in one DuckDB file; every read names its tenant."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()  # opening, and appends (seq and chain are read-then-write)
        self._conn: Any = None
        self._local = threading.local()
        self._cursors: list[Any] = []
        self._last_seq: int | None = None  # loaded under the lock on the first append
        self._heads: dict[str, tuple[int, str]] = {}  # tenant -> (tenant_seq, hash) of its last receipt
        self._queue_lock = threading.Lock()
        self._token: str | None = None  # the local-admin token, while this ledger holds the file
        self._pending: list[_Ticket] = []  # appends waiting for the writer lock

    def append(self, new: NewReceipt, *, at: datetime | None = None) -> Receipt:
        """Write one receipt at the end of the ledger and of its tenant's hash chain.

        Concurrent appends commit together: whichever thread takes the writer
        lock first writes every receipt waiting by then in one statement and
        one commit (one fsync), and the others find theirs written.
        """
        ticket = _Ticket(_prepare(new, at))
        cur = self._cursor()
        with self._queue_lock:
            self._pending.append(ticket)
        with self._lock:
            if not ticket.done:
                with self._queue_lock:
                    batch, self._pending = self._pending, []
                self._write(cur, batch)
        if ticket.error is not None:
            raise ticket.error
        return cast(Receipt, ticket.receipt)  # _write sets it whenever it sets no error

    def get(self, tenant_id: str, receipt_id: str) -> Receipt:
        """The tenant's receipt by id; NotFound for another tenant's, like one that never existed."""
        row = self._cursor().execute(
            f"SELECT {_COLUMNS} FROM receipts WHERE tenant_id = ? AND id = ?", [tenant_id, receipt_id]
        ).fetchone()
        if row is None:
            raise errors.NotFound(f"No such receipt: '{receipt_id}'")
        return _receipt(row)

    def list_receipts(
        self,
        tenant_id: str,
        *,
        operator_id: str | None = None,
        entity_key: str | None = None,
        decision: str | None = None,
        limit: int | None = None,
        before_seq: int | None = None,
    ) -> list[Receipt]:
        """The tenant's receipts newest first, optionally filtered."""
        sql, params = pages.newest_first(
            f"SELECT {_COLUMNS} FROM receipts WHERE tenant_id = ?", [tenant_id],
            [("operator_id", operator_id), ("entity_key", entity_key), ("decision", decision)],
            limit=limit, before_seq=before_seq)
        return [_receipt(r) for r in self._cursor().execute(sql, params).fetchall()]

    def close(self) -> None:
        with self._lock:
            for cursor in self._cursors:
                cursor.close()
            self._cursors.clear()
            if self._conn is not None:
                self._conn.close()
                self._conn = None
                ledger_access.withdraw(self.path)
                self._token = None
            self._local = threading.local()
            self._last_seq = None
            self._heads.clear()

    def _write(self, cur: Any, batch: list[_Ticket]) -> None:
        """Chain and insert `batch` in one statement; every ticket gets its receipt or the error."""
        heads: dict[str, tuple[int, str]] = {}
        try:
            last_seq = self._last(cur)
            rows = []
            for ticket in batch:
                values = ticket.values
                tenant_seq, prev_hash = heads.get(values["tenant_id"]) or self._head(cur, values["tenant_id"])
                last_seq += 1
                values.update(seq=last_seq, tenant_seq=tenant_seq + 1, id=ids.new_id("receipt"),
                              prev_hash=prev_hash)
                values["hash"] = chain_hash(values)
                heads[values["tenant_id"]] = (values["tenant_seq"], values["hash"])
                rows.append({("disposed_at" if n == "at" else n): _stored(n, values[n]) for n in _FIELDS})
            # One JSON parameter, not 27 per row: binding each Python value costs more than the insert.
            cur.execute(_INSERT, [json.dumps(rows, separators=(",", ":"))])
        except Exception as e:  # disk full, file gone: no caller may act as if recorded
            error = errors.TemporaryError(f"receipt ledger unavailable: {e}")
            for ticket in batch:
                ticket.error, ticket.done = error, True
            return
        self._last_seq = last_seq
        self._heads.update(heads)
        for ticket in batch:
            ticket.receipt = Receipt(**{n: ticket.values[n] for n in _FIELDS})
            ticket.done = True

    def _last(self, cur: Any) -> int:
        if self._last_seq is None:
            self._last_seq = int(cur.execute("SELECT coalesce(max(seq), 0) FROM receipts").fetchone()[0])
        return self._last_seq

    def _head(self, cur: Any, tenant_id: str) -> tuple[int, str]:
        head = self._heads.get(tenant_id)
        if head is None:
            row = cur.execute("SELECT tenant_seq, hash FROM receipts WHERE tenant_id = ? "
                              "ORDER BY tenant_seq DESC LIMIT 1", [tenant_id]).fetchone()
            head = (int(row[0]), str(row[1])) if row else (0, GENESIS)
            self._heads[tenant_id] = head
        return head

    def _cursor(self) -> Any:
        cursor = getattr(self._local, "cursor", None)
        if cursor is not None:
            return cursor
        with self._lock:
            if self._conn is None:
                self._conn = _connect(self.path)
                self._token = ledger_access.publish(self.path)
            cursor = self._conn.cursor()
            self._cursors.append(cursor)
        self._local.cursor = cursor
        return cursor

    # --- read-only lookups for the executor (issue 7) ------------------------------------

    def applied(self, tenant_id: str, idempotency_key: str) -> Receipt | None:
        """The receipt that applied this idempotency key for the tenant, if any (the executor's DEDUP)."""
        row = self._cursor().execute(
            f"SELECT {_COLUMNS} FROM receipts WHERE tenant_id = ? AND idempotency_key = ?"
            " AND outcome = 'applied' ORDER BY seq LIMIT 1", [tenant_id, idempotency_key]
        ).fetchone()
        return None if row is None else _receipt(row)

    def for_action(self, tenant_id: str, plan_id: str, idempotency_key: str) -> Receipt | None:
        """The receipt of one action of one plan, if written (a plan disposes of each action once)."""
        row = self._cursor().execute(
            f"SELECT {_COLUMNS} FROM receipts WHERE tenant_id = ? AND plan_id = ? AND idempotency_key = ?"
            " ORDER BY seq LIMIT 1", [tenant_id, plan_id, idempotency_key]
        ).fetchone()
        return None if row is None else _receipt(row)

    def applied_counts(
        self, tenant_id: str, *, entity_key: str, operator_id: str, capability: str, now: datetime
    ) -> dict[str, tuple[int, int]]:
        """Applied receipts (last hour, last day) by scope: entity, operator, capability,
        entity_capability; the policy input's context.counts."""
        hour = (now - timedelta(hours=1)).astimezone(UTC).replace(tzinfo=None)
        day = (now - timedelta(days=1)).astimezone(UTC).replace(tzinfo=None)
        scopes = {
            "entity": ("entity_key = ?", [entity_key]),
            "operator": ("operator_id = ?", [operator_id]),
            "capability": ("capability = ?", [capability]),
            "entity_capability": ("entity_key = ? AND capability = ?", [entity_key, capability]),
        }
        select: list[str] = []
        params: list[Any] = []
        for where, values in scopes.values():
            select.append(f"count(*) FILTER (WHERE {where} AND disposed_at >= ?)")
            select.append(f"count(*) FILTER (WHERE {where})")
            params += [*values, hour, *values]
        row = self._cursor().execute(
            f"SELECT {', '.join(select)} FROM receipts WHERE tenant_id = ? AND outcome = 'applied'"
            " AND disposed_at >= ?", [*params, tenant_id, day]
        ).fetchone()
        return {name: (int(row[2 * n]), int(row[2 * n + 1])) for n, name in enumerate(scopes)}


class _Ticket:
    """One append waiting to be written, by its own thread or by another's batch."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.done = False
        self.receipt: Receipt | None = None
        self.error: errors.FibricError | None = None


def _prepare(new: NewReceipt, at: datetime | None) -> dict[str, Any]:
    """The receipt's values but its place in the chain, checked, JSON as it will read back."""
    if new.decision not in DECISIONS:
        raise errors.PermanentError(f"receipt decision must be one of {DECISIONS}, not {new.decision!r}")
    if new.outcome not in OUTCOMES:
        raise errors.PermanentError(f"receipt outcome must be one of {OUTCOMES}, not {new.outcome!r}")
    values = asdict(new)
    policy = dict(new.policy) if new.policy is not None else {"decision": new.decision, "rule": new.rule}
    # Hash what a reader will get back: the JSON columns as they round-trip.
    for name, value in (("args", dict(new.args)), ("policy", policy), ("detail", new.detail)):
        values[name] = _loads(_dumps(value))
    values["at"] = (at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    return values


def _stored(name: str, value: Any) -> Any:
    if name in _JSON_COLUMNS:
        return _dumps(value)
    if name == "at":
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return value


def audit_token(ledger: Ledger) -> str | None:
    """The local-admin token the ledger published when it took the file (fibric/store/ledger_access.py)."""
    return ledger._token


def export_parquet(ledger: Ledger, dest: Path, tenant_id: str | None = None) -> int:
    """Copy one tenant's receipts (all, without one) to a Parquet file; the rows copied.

    One statement, so a consistent snapshot, read beside the appends without
    blocking them: this is how an auditor reads the ledger while the server
    holds the file (fibric/store/audit_sql.py).
    """
    where = "WHERE tenant_id = $tenant" if tenant_id is not None else ""
    params = {"tenant": tenant_id} if tenant_id is not None else {}
    cur = ledger._cursor().cursor()  # a cursor of its own: COPY runs long, appends go on
    try:
        literal = str(dest).replace("'", "''")
        cur.execute(f"COPY (SELECT {_COLUMNS} FROM receipts {where} ORDER BY seq) TO '{literal}' "
                    f"(FORMAT parquet)", params)
        return int(cur.fetchone()[0])
    except _duckdb_error() as e:
        raise errors.TemporaryError(f"receipt ledger unavailable: {e}") from e
    finally:
        cur.close()


def chain_hash(values: Mapping[str, Any]) -> str:
    """SHA-256 of a receipt's canonical JSON: every field but `hash`, `at` as RFC 3339.

    Canonical JSON is Python's json.dumps with sorted keys, "," and ":" as
    separators and ASCII escapes; docs/receipts.md shows how to recompute it.
    """
    canonical = {k: v for k, v in values.items() if k != "hash"}
    canonical["at"] = timefmt.rfc3339(values["at"])
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _connect(path: Path) -> Any:
    import duckdb

    on_disk = str(path) != ":memory:"
    fresh = on_disk and not path.exists()
    if on_disk:
        filemodes.make_private_dir(path.parent)
    deadline = time.monotonic() + OPEN_WAIT
    while True:
        try:
            conn = duckdb.connect(str(path), config=CONFIG)
            break
        except duckdb.Error as e:  # another process holds the file
            # An auditor's direct read holds a shared lock for as long as one copy takes: wait it out.
            if "lock" not in str(e).lower() or time.monotonic() >= deadline:
                raise errors.TemporaryError(f"receipt ledger unavailable: {e}") from e
            time.sleep(0.05)
    try:
        # Private like the rest of the data dir (filemodes.py). DuckDB refuses a pre-made empty
        # file, so the one it just made (a bare header so far) is tightened here.
        if fresh:
            filemodes.restrict(path)
        elif on_disk:
            filemodes.warn_if_shared(path)
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: Any, path: Path) -> None:
    """Create the schema, or check that the file's is the one this code writes."""
    tables = {r[0] for r in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}
    if "receipts" in tables and "ledger_meta" not in tables:  # schema 1: no per-tenant sequence
        if conn.execute("SELECT count(*) FROM receipts").fetchone()[0]:
            raise errors.PermanentError(
                f"{path} holds receipts of ledger schema 1, whose chains have no per-tenant sequence and "
                f"cannot be extended by this version (schema {SCHEMA_VERSION}); move the file aside (it "
                f"stays readable with duckdb) and start a new ledger")
        conn.execute("ALTER TABLE receipts ADD COLUMN tenant_seq BIGINT")
    conn.execute(SCHEMA)
    conn.execute("INSERT INTO ledger_meta VALUES ('schema_version', ?) ON CONFLICT DO NOTHING",
                 [str(SCHEMA_VERSION)])
    version = conn.execute("SELECT value FROM ledger_meta WHERE key = 'schema_version'").fetchone()[0]
    if version != str(SCHEMA_VERSION):
        raise errors.PermanentError(
            f"{path} has ledger schema {version}; this version of Fibric reads and writes schema "
            f"{SCHEMA_VERSION} only")


def _duckdb_error() -> type[Exception]:
    import duckdb

    return duckdb.Error


def _loads(text: str | None) -> Any:
    return json.loads(text) if text is not None else None


def _dumps(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise errors.PermanentError(f"receipt data is not JSON: {e}") from e


FIELDS = _FIELDS  # in the order of COLUMNS
COLUMNS = _COLUMNS  # the receipts table's columns, `at` read from disposed_at


def from_row(row: Any) -> Receipt:
    """The receipt of one row of `SELECT {COLUMNS} FROM receipts` (ValueError when not one)."""
    try:
        return _receipt(row)
    except (TypeError, AttributeError, ValueError) as e:
        raise ValueError(str(e)) from e


def values_of(row: Any) -> dict[str, Any]:
    """A row's fields as a receipt has them (JSON parsed, `at` in UTC): what chain_hash takes."""
    values = dict(zip(_FIELDS, row, strict=True))
    for name in _JSON_COLUMNS:
        values[name] = json.loads(values[name]) if values[name] is not None else None
    values["at"] = values["at"].replace(tzinfo=UTC)
    return values


def _receipt(row: Any) -> Receipt:
    return Receipt(**values_of(row))
