"""The receipt ledger: one append-only DuckDB row per disposed action, for auditors' SQL.

A receipt records what triggered an action, what was proposed, what the
policy decided and why, the idempotency key that keeps the action from ever
applying twice, and the outcome. This module can only append and read: no
code path updates or deletes a receipt. Each receipt carries the hash of the
previous receipt of its tenant (`prev_hash`) and its own (`hash`, SHA-256 of
its canonical JSON), so an edit or a gap in a tenant's chain is detectable.

DuckDB is embedded: one connection per ledger, one cursor per thread (a
DuckDB connection is not shared between threads). The file is opened on first
use, so an API that is never asked for receipts never creates it. Extensions
are never installed or loaded at run time (JSON is built into the pinned
release).

Appends are serialised by one lock and keep each tenant's chain head in
memory: the process holding the DuckDB file is its only writer, so the cache
is authoritative, and an append costs one INSERT. The file records its schema
version (`ledger_meta`); a file of another version is refused with a message
rather than extended with a chain that would not verify. docs/receipts.md
documents every column for auditors; fibric/store/audit.py verifies chains.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fibric import errors, ids
from fibric.store import ledger_access

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
    "seq", "tenant_seq", "id", "reseller_id", "tenant_id", "operator_id", "operator", "capability", "entity_key", "args",
    "triggered_by_event", "plan_id", "run_id", "proposed_by", "decision", "rule", "policy", "policy_id",
    "policy_sha256", "idempotency_key", "outcome", "approver", "detail", "at", "prev_hash", "hash",
)
_COLUMNS = ", ".join("disposed_at" if f == "at" else f for f in _FIELDS)
_JSON_COLUMNS = frozenset({"args", "policy", "detail"})
_MAX_SEQ = 2**63 - 1


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

    def append(self, new: NewReceipt, *, at: datetime | None = None) -> Receipt:
        """Write one receipt at the end of the ledger and of its tenant's hash chain."""
        if new.decision not in DECISIONS:
            raise errors.PermanentError(f"receipt decision must be one of {DECISIONS}, not {new.decision!r}")
        if new.outcome not in OUTCOMES:
            raise errors.PermanentError(f"receipt outcome must be one of {OUTCOMES}, not {new.outcome!r}")
        when = (at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
        values = asdict(new)
        values["args"] = dict(new.args)
        values["policy"] = dict(new.policy) if new.policy is not None else {
            "decision": new.decision, "rule": new.rule}
        cur = self._cursor()
        with self._lock:
            last = cur.execute("SELECT max(seq) FROM receipts").fetchone()[0]
            prev = cur.execute(
                "SELECT hash FROM receipts WHERE tenant_id = ? ORDER BY seq DESC LIMIT 1", [new.tenant_id]
            ).fetchone()
            values.update(seq=int(last or 0) + 1, id=ids.new_id("receipt"), at=when,
                          prev_hash=prev[0] if prev else GENESIS)
            values["hash"] = chain_hash(values)
            row = [_dumps(values[n]) if n in _JSON_COLUMNS else values[n] for n in _FIELDS]
            row[_FIELDS.index("at")] = when.replace(tzinfo=None)
            cur.execute(
                f"INSERT INTO receipts ({_COLUMNS}) VALUES ({', '.join('?' * len(_FIELDS))})", row
            )
        return self.get(new.tenant_id, values["id"])

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
        sql = f"SELECT {_COLUMNS} FROM receipts WHERE tenant_id = ?"
        params: list[Any] = [tenant_id]
        for column, value in (("operator_id", operator_id), ("entity_key", entity_key),
                              ("decision", decision)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        if before_seq is not None:
            sql += " AND seq < ?"
            params.append(min(max(before_seq, 0), _MAX_SEQ))
        sql += " ORDER BY seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_receipt(r) for r in self._cursor().execute(sql, params).fetchall()]

    def close(self) -> None:
        with self._lock:
            for cursor in self._cursors:
                cursor.close()
            self._cursors.clear()
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._local = threading.local()

    def _cursor(self) -> Any:
        cursor = getattr(self._local, "cursor", None)
        if cursor is not None:
            return cursor
        with self._lock:
            if self._conn is None:
                self._conn = _connect(self.path)
            cursor = self._conn.cursor()
            self._cursors.append(cursor)
        self._local.cursor = cursor
        return cursor


def chain_hash(values: Mapping[str, Any]) -> str:
    """SHA-256 of a receipt's canonical JSON (every column but `hash`, times as RFC 3339)."""
    canonical = {k: v for k, v in values.items() if k != "hash"}
    canonical["at"] = values["at"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _connect(path: Path) -> Any:
    import duckdb

    if str(path) != ":memory:":
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = duckdb.connect(str(path), config={"autoinstall_known_extensions": False,
                                                 "autoload_known_extensions": False})
    except duckdb.Error as e:  # e.g. another process holds the file
        raise errors.TemporaryError(f"receipt ledger unavailable: {e}") from e
    conn.execute(SCHEMA)
    return conn


def _dumps(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise errors.PermanentError(f"receipt data is not JSON: {e}") from e


def _receipt(row: Any) -> Receipt:
    values = dict(zip(_FIELDS, row, strict=True))
    for name in _JSON_COLUMNS:
        values[name] = json.loads(values[name]) if values[name] is not None else None
    values["at"] = values["at"].replace(tzinfo=UTC)
    return Receipt(**values)
