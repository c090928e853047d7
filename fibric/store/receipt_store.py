"""Receipts of record: one append-only row per disposed action, in the state store, hash-chained per tenant.

A receipt records what triggered an action, what was proposed, what the
policy decided and why, the idempotency key that keeps the action from ever
applying twice, and the outcome. The state store (SQLite or PostgreSQL) is
the system of record: a receipt is inserted in the same transaction that
completes its intent and enqueues its webhook events (fibric/store/intents.py),
so a receipt, its intent and its events are all there or none is.

Each tenant's receipts form one hash chain (`tenant_seq` 1, 2, 3, ...; each
carries the previous receipt's hash and its own over its canonical JSON),
computed inside that transaction under a lock on the tenant's head row
(`receipt_heads`), so there is exactly one chain per tenant whichever process
writes. A unique index makes a second `applied` receipt for a key
impossible, so DEDUP is an index read; the policy's counts are index range
reads. Triggers refuse UPDATE and DELETE (fibric/store/migrations.py).

DuckDB is the auditors' ledger: a sealer copies these rows into it, in
`tenant_seq` order, exactly once (fibric/store/sealed.py,
fibric/controller/sealer.py). docs/receipts.md documents every column.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from fibric import errors, ids, timefmt
from fibric.store import dialect, pages, stamps
from fibric.store import state as state_module

GENESIS = "0" * 64  # prev_hash of a tenant's first receipt
DECISIONS = ("ALLOW", "ALERT", "BLOCK", "DEDUP")
# `declined`: a person did not approve the action (left out of only_actions, rejected, expired).
OUTCOMES = ("applied", "failed", "refused", "deduplicated", "in_doubt", "declined")

FIELDS = (
    "seq", "tenant_seq", "id", "reseller_id", "tenant_id", "operator_id", "operator", "capability",
    "entity_key", "args", "triggered_by_event", "plan_id", "run_id", "proposed_by", "decision", "rule",
    "policy", "policy_id", "policy_sha256", "idempotency_key", "outcome", "approver", "detail", "at",
    "prev_hash", "hash", "decided_by", "request_id", "trace_id", "decision_input",
)
PREV_HASH, HASH = FIELDS.index("prev_hash"), FIELDS.index("hash")  # positions in a row of COLUMNS
# Fields added after the first release: hashed only when set, so earlier receipts keep their hashes.
LATER_FIELDS = frozenset({"decided_by", "request_id", "trace_id", "decision_input"})
COLUMNS = ", ".join("disposed_at" if f == "at" else f for f in FIELDS)  # `at` is a keyword in SQL
JSON_FIELDS = frozenset({"args", "policy", "detail", "decided_by", "decision_input"})


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
    decided_by: Mapping[str, Any] | None = None  # {key_id, key_name}: the key whose decision it carries out
    request_id: str | None = None  # the API request it was disposed of in (None: recovery, a service)
    trace_id: str | None = None  # its OpenTelemetry trace, when the server traces (fibric/tracing.py)
    # The input document the policy was evaluated on, masked (fibric/policies/masking.py); None when
    # no policy ran (declined, dedup, policy missing) and for receipts from before it was kept.
    decision_input: Mapping[str, Any] | None = None


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
    decided_by: dict[str, Any] | None = None
    request_id: str | None = None
    trace_id: str | None = None
    decision_input: dict[str, Any] | None = None


class AlreadyApplied(errors.Conflict):
    """An `applied` receipt for this key exists already: the database refused a second one."""


class Ledger(Protocol):
    """The receipts of record, as the executor, the API and the auditors read them."""

    def append(self, new: NewReceipt, *, at: datetime | None = None) -> Receipt: ...

    def get(self, tenant_id: str, receipt_id: str) -> Receipt: ...

    def list_receipts(
        self, tenant_id: str, *, operator_id: str | None = None, entity_key: str | None = None,
        decision: str | None = None, limit: int | None = None, before_seq: int | None = None,
    ) -> list[Receipt]: ...

    def applied(self, tenant_id: str, idempotency_key: str) -> Receipt | None: ...

    def for_action(self, tenant_id: str, plan_id: str, idempotency_key: str) -> Receipt | None: ...

    def applied_counts(
        self, tenant_id: str, *, entity_key: str, operator_id: str, capability: str, now: datetime
    ) -> dict[str, tuple[int, int]]: ...


class StoreLedger:
    """The Ledger of a state store (SQLite or PostgreSQL): every read names its tenant."""

    def __init__(self, state: state_module.StateStore) -> None:
        self.state = state

    def append(self, new: NewReceipt, *, at: datetime | None = None) -> Receipt:
        """Write one receipt in a transaction of its own (see `append` to join the caller's)."""
        with self.state.backend.transaction(write=True) as cur:
            return append(cur, self.state.sql, new, at=at)

    def get(self, tenant_id: str, receipt_id: str) -> Receipt:
        """The tenant's receipt by id; NotFound for another tenant's, like one that never existed."""
        found = self._one("id = ?", [receipt_id], tenant_id)
        if found is None:
            raise errors.NotFound(f"No such receipt: '{receipt_id}'")
        return found

    def list_receipts(
        self, tenant_id: str, *, operator_id: str | None = None, entity_key: str | None = None,
        decision: str | None = None, limit: int | None = None, before_seq: int | None = None,
    ) -> list[Receipt]:
        """The tenant's receipts newest first, optionally filtered (an index read per page)."""
        sql, params = pages.newest_first(
            f"SELECT {COLUMNS} FROM receipts WHERE tenant_id = ?", [tenant_id],
            [("operator_id", operator_id), ("entity_key", entity_key), ("decision", decision)],
            limit=limit, before_seq=before_seq)
        with self.state.backend.transaction(write=False) as cur:
            cur.execute(sql, params)
            return [from_row(r) for r in cur.fetchall()]

    def applied(self, tenant_id: str, idempotency_key: str) -> Receipt | None:
        """The receipt that applied this idempotency key for the tenant, if any (the executor's DEDUP)."""
        return self._one("idempotency_key = ? AND outcome = 'applied'", [idempotency_key], tenant_id)

    def for_action(self, tenant_id: str, plan_id: str, idempotency_key: str) -> Receipt | None:
        """The receipt of one action of one plan, if written (a plan disposes of each action once)."""
        return self._one("plan_id = ? AND idempotency_key = ?", [plan_id, idempotency_key], tenant_id)

    def applied_counts(
        self, tenant_id: str, *, entity_key: str, operator_id: str, capability: str, now: datetime
    ) -> dict[str, tuple[int, int]]:
        """Applied receipts (last hour, last day) by scope: entity, operator, capability,
        entity_capability; the policy input's context.counts. Each is an index range read."""
        hour, day = stamps.stamp(now - timedelta(hours=1)), stamps.stamp(now - timedelta(days=1))
        scopes = {
            "entity": ("entity_key = ?", [entity_key]),
            "operator": ("operator_id = ?", [operator_id]),
            "capability": ("capability = ?", [capability]),
            "entity_capability": ("entity_key = ? AND capability = ?", [entity_key, capability]),
        }
        parts, params = [], []
        for where, values in scopes.values():
            for since in (hour, day):
                parts.append(f"(SELECT COUNT(*) FROM receipts WHERE tenant_id = ? AND {where}"
                             " AND outcome = 'applied' AND disposed_at >= ?)")
                params += [tenant_id, *values, since]
        with self.state.backend.transaction(write=False) as cur:
            cur.execute(f"SELECT {', '.join(parts)}", params)
            row = cur.fetchone()
        return {name: (int(row[2 * n]), int(row[2 * n + 1])) for n, name in enumerate(scopes)}

    def of_policy(
        self, tenant_id: str, policy_id: str, *, since: datetime | None = None,
        operator_id: str | None = None, batch: int = 1000,
    ) -> Iterator[Receipt]:
        """The tenant's receipts decided by `policy_id`, oldest first, paged by seq (replay reads them)."""
        where, params = "tenant_id = ? AND policy_id = ?", [tenant_id, policy_id]
        if since is not None:
            where, params = where + " AND disposed_at >= ?", [*params, stamps.stamp(since)]
        if operator_id is not None:
            where, params = where + " AND operator_id = ?", [*params, operator_id]
        last = 0
        while True:
            with self.state.backend.transaction(write=False) as cur:
                cur.execute(f"SELECT {COLUMNS} FROM receipts WHERE {where} AND seq > ? ORDER BY seq LIMIT ?",
                            [*params, last, batch])
                found = [from_row(r) for r in cur.fetchall()]
            yield from found
            if len(found) < batch:
                return
            last = found[-1].seq

    def heads(self) -> dict[str, int]:
        """Every tenant's last tenant_seq (what the sealer compares with what it sealed)."""
        with self.state.backend.transaction(write=False) as cur:
            cur.execute("SELECT tenant_id, tenant_seq FROM receipt_heads WHERE tenant_seq > 0")
            return {str(r[0]): int(r[1]) for r in cur.fetchall()}

    def after(self, tenant_id: str, tenant_seq: int, limit: int) -> list[Receipt]:
        """The tenant's receipts after `tenant_seq`, in chain order (the sealer's next batch)."""
        with self.state.backend.transaction(write=False) as cur:
            cur.execute(f"SELECT {COLUMNS} FROM receipts WHERE tenant_id = ? AND tenant_seq > ?"
                        " ORDER BY tenant_seq LIMIT ?", (tenant_id, tenant_seq, limit))
            return [from_row(r) for r in cur.fetchall()]

    def chain(self, tenant_id: str, batch: int = 10_000) -> Iterator[tuple[Any, ...]]:
        """Every row of the tenant's chain in tenant_seq order, as stored (what `audit verify` walks)."""
        last_tenant_seq, last_seq = -1, -1  # pages by (tenant_seq, seq): a forged duplicate is not skipped
        while True:
            with self.state.backend.transaction(write=False) as cur:
                cur.execute(f"SELECT {COLUMNS} FROM receipts WHERE tenant_id = ? AND tenant_seq >= ?"
                            " AND (tenant_seq > ? OR seq > ?) ORDER BY tenant_seq, seq LIMIT ?",
                            (tenant_id, last_tenant_seq, last_tenant_seq, last_seq, batch))
                rows = [tuple(r) for r in cur.fetchall()]
            yield from rows
            if len(rows) < batch:
                return
            last_tenant_seq, last_seq = int(rows[-1][1]), int(rows[-1][0])

    def tenants(self) -> list[str]:
        with self.state.backend.transaction(write=False) as cur:
            cur.execute("SELECT DISTINCT tenant_id FROM receipts ORDER BY tenant_id")
            return [str(r[0]) for r in cur.fetchall()]

    def with_hash(self, tenant_id: str, chain_hash_: str) -> str | None:
        """The id of the tenant's receipt with this hash (tells a reordering from a broken link)."""
        found = self._one("hash = ?", [chain_hash_], tenant_id)
        return found.id if found is not None else None

    def _one(self, where: str, params: list[Any], tenant_id: str) -> Receipt | None:
        with self.state.backend.transaction(write=False) as cur:
            cur.execute(f"SELECT {COLUMNS} FROM receipts WHERE tenant_id = ? AND {where}"
                        " ORDER BY seq LIMIT 1", [tenant_id, *params])
            row = cur.fetchone()
        return from_row(row) if row is not None else None


@dataclass(frozen=True)
class Prepared:
    """A new receipt checked and rendered as it will read back: all but its place in the chain.

    Made before the write transaction (`prepare`), so the JSON work is not
    done while every other writer waits for the lock.
    """

    values: Mapping[str, Any]

    @property
    def tenant_id(self) -> str:
        return str(self.values["tenant_id"])

    @property
    def idempotency_key(self) -> str:
        return str(self.values["idempotency_key"])


def prepare(new: NewReceipt, *, at: datetime | None = None) -> Prepared:
    """Check a new receipt and render its JSON columns; PermanentError when it cannot be a receipt."""
    return Prepared(_prepare(new, at))


def append(
    cur: Any, sql: dialect.Dialect, new: NewReceipt | Prepared, *, at: datetime | None = None,
) -> Receipt:
    """Insert one receipt at the end of its tenant's chain, in the caller's write transaction.

    The tenant's head row is locked first (FOR UPDATE on PostgreSQL; SQLite's
    write transaction excludes every other writer), so concurrent appends of
    one tenant, from any process, queue here and chain one after another.
    AlreadyApplied when the key was applied already (the unique index). `sql` may
    still be given by its name (a caller from before dialect.py).
    """
    values = dict((new if isinstance(new, Prepared) else prepare(new, at=at)).values)
    head = _lock_head(cur, sql, new.tenant_id)
    tenant_seq, prev_hash = int(head[0]), str(head[1])
    values.update(seq=_next_seq(cur, sql), tenant_seq=tenant_seq + 1, id=ids.new_id("receipt"),
                  prev_hash=prev_hash)
    values["hash"] = chain_hash(values)
    try:
        with sql.may_fail(cur, "fibric_receipt"):  # a failed INSERT must not abort the caller's transaction
            cur.execute(f"INSERT INTO receipts ({COLUMNS}) VALUES ({', '.join('?' for _ in FIELDS)})",
                        [stored(f, values[f]) for f in FIELDS])
    except Exception as e:
        if "receipts_applied_once" in str(e) or ("UNIQUE" in str(e) and "idempotency_key" in str(e)):
            raise AlreadyApplied(f"idempotency key {new.idempotency_key} was applied already") from e
        raise
    cur.execute("UPDATE receipt_heads SET tenant_seq = ?, hash = ? WHERE tenant_id = ?",
                (values["tenant_seq"], values["hash"], new.tenant_id))
    return Receipt(**{f: values[f] for f in FIELDS})


def _lock_head(cur: Any, sql: dialect.Dialect, tenant_id: str) -> tuple[Any, ...]:
    """The tenant's head row (tenant_seq, hash), locked until the transaction ends; made if missing.

    A tenant's first two receipts, written at once, must queue like any others,
    so the head row is there before it is locked: FOR UPDATE cannot lock a row
    that does not exist.
    """
    lock = sql.for_update  # SQLite's write transaction is the lock
    cur.execute(f"SELECT tenant_seq, hash FROM receipt_heads WHERE tenant_id = ?{lock}", (tenant_id,))
    head = cur.fetchone()
    if head is None:
        cur.execute("INSERT INTO receipt_heads (tenant_id, tenant_seq, hash) VALUES (?, 0, ?)"
                    " ON CONFLICT (tenant_id) DO NOTHING", (tenant_id, GENESIS))
        cur.execute(f"SELECT tenant_seq, hash FROM receipt_heads WHERE tenant_id = ?{lock}", (tenant_id,))
        head = cur.fetchone()
    return tuple(head)


def chain_hash(values: Mapping[str, Any]) -> str:
    """SHA-256 of a receipt's canonical JSON: every field but `hash`, `at` as RFC 3339.

    A field added in a later release (LATER_FIELDS) is left out while it is
    null, so receipts written before it existed verify as they always did.

    Canonical JSON is Python's json.dumps with sorted keys, "," and ":" as
    separators and ASCII escapes; docs/receipts.md shows how to recompute it.
    """
    canonical = {k: v for k, v in values.items()
                 if k != "hash" and not (k in LATER_FIELDS and v is None)}
    canonical["at"] = timefmt.rfc3339(values["at"])
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def from_row(row: Any) -> Receipt:
    """The receipt of one row of `SELECT {COLUMNS} FROM receipts` (ValueError when not one)."""
    try:
        return Receipt(**values_of(row))
    except (TypeError, AttributeError, ValueError) as e:
        raise ValueError(str(e)) from e


def values_of(row: Any) -> dict[str, Any]:
    """A row's fields as a receipt has them (JSON parsed, `at` in UTC): what chain_hash takes.

    Reads the state store's rows (JSON as text, `at` as RFC 3339 text) and the
    sealed ledger's (JSON as text, `at` a naive UTC timestamp) alike.
    """
    values = dict(zip(FIELDS, row, strict=True))
    for name in JSON_FIELDS:
        values[name] = json.loads(values[name]) if values[name] is not None else None
    at = values["at"]
    at = datetime.fromisoformat(at) if isinstance(at, str) else at
    values["at"] = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return values


def _prepare(new: NewReceipt, at: datetime | None) -> dict[str, Any]:
    """The receipt's values but its place in the chain, checked, JSON as it will read back."""
    if new.decision not in DECISIONS:
        raise errors.PermanentError(f"receipt decision must be one of {DECISIONS}, not {new.decision!r}")
    if new.outcome not in OUTCOMES:
        raise errors.PermanentError(f"receipt outcome must be one of {OUTCOMES}, not {new.outcome!r}")
    values = {f.name: getattr(new, f.name) for f in fields(new)}  # shallow: the JSON columns are redone below
    policy = dict(new.policy) if new.policy is not None else {"decision": new.decision, "rule": new.rule}
    # Hash what a reader will get back: the JSON columns as they round-trip.
    decided_by = dict(new.decided_by) if new.decided_by is not None else None
    decision_input = dict(new.decision_input) if new.decision_input is not None else None
    for name, value in (("args", dict(new.args)), ("policy", policy), ("detail", new.detail),
                        ("decided_by", decided_by), ("decision_input", decision_input)):
        values[name] = _loads(_dumps(value))
    # Kept to the microsecond (the sealer's lag is measured from it); the hash reads it to the second.
    values["at"] = (at or datetime.now(UTC)).astimezone(UTC)
    return values


def _next_seq(cur: Any, sql: dialect.Dialect) -> int:
    """The receipt's place in the whole ledger (part of its hash, so known before the insert)."""
    cur.execute(sql.next_value("fibric_receipt_seq",
                               counter="SELECT COALESCE(MAX(seq), 0) + 1 FROM receipts"))
    return int(cur.fetchone()[0])


def stored(name: str, value: Any) -> Any:
    """A receipt field as the state store keeps it (JSON as text, `at` as RFC 3339 text)."""
    if name in JSON_FIELDS:
        return _dumps(value)
    if name == "at":
        return stamps.stamp(value)
    return value


def _loads(text: str | None) -> Any:
    return json.loads(text) if text is not None else None


def _dumps(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise errors.PermanentError(f"receipt data is not JSON: {e}") from e
