"""What the executor is about to do, written down before it does it, so a crash cannot lose it.

Two records, both in the state store:

- an **execution** per approved plan being disposed of: which actions were
  approved (`only_actions`), and the claim on it (claims.py, kind
  EXECUTION): who works on it (`holder`), under which fencing `token`, and
  until when (`expires_at`, renewed while the holder lives). Recovery takes
  over an execution whose holder stopped renewing, with a new token, and
  finishes the plan; an intent is written only under the live token.
- an **intent** per action, written after the policy decided and before the
  tool is called (or the refusal / dedup receipt written). It carries
  everything the receipt needs. `complete` marks it done with its receipt id
  and, in the same transaction, enqueues the action's webhook events, so the
  events exist exactly when a completed intent does. An intent still pending
  after a crash tells recovery that a receipt may be missing.

Receipts live in DuckDB (fibric/store/receipt_store.py), a different database, so
"receipt written" and "intent completed" are two commits: the receipt comes
first, and recovery completes an intent whose receipt already exists.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fibric import errors
from fibric.store import claims, leases, outbox, plan_store, receipt_store, run_store, stamps
from fibric.store import state as state_module

_INTENT_COLUMNS = (
    "id, reseller_id, tenant_id, plan_id, idempotency_key, calls_tool, receipt, tool, state, receipt_id,"
    " created_at, completed_at"
)
_EXECUTION_COLUMNS = "tenant_id, plan_id, only_actions, holder, started_at, expires_at, finished_at, token"

Events = Sequence[tuple[str, Mapping[str, Any]]]  # (webhook event type, payload)


@dataclass(frozen=True)
class Intent:
    id: str
    reseller_id: str
    tenant_id: str
    plan_id: str
    idempotency_key: str
    calls_tool: bool  # False for a refusal or a dedup: nothing external happens
    receipt: dict[str, Any]  # the NewReceipt fields decided before the call (no outcome, no detail)
    tool: dict[str, Any]  # connector, name, annotations, idempotent: as resolved when deciding
    state: str  # pending | completed
    receipt_id: str | None
    created_at: datetime
    completed_at: datetime | None


@dataclass(frozen=True)
class Execution:
    tenant_id: str
    plan_id: str
    only_actions: list[str] | None
    holder: str
    started_at: datetime
    expires_at: datetime
    finished_at: datetime | None
    token: int  # the claim's fencing token (claims.py): what the holder's writes present


# --- executions ----------------------------------------------------------------------


def begin_execution(
    state: state_module.StateStore, tenant_id: str, plan_id: str, *, only_actions: Sequence[str] | None,
    holder: str, ttl: float,
) -> Execution:
    """Record that `holder` disposes of the (just approved) plan; Conflict if an execution exists."""
    with state.backend.transaction(write=True, durable=False) as cur:  # the first intent's commit syncs it
        now = stamps.db_now(cur, state.sql)
        taken = claims.take(
            cur, state.sql, claims.EXECUTION, (tenant_id, plan_id), holder, ttl, now=now, takeover=False,
            values={"only_actions": None if only_actions is None else json.dumps(list(only_actions)),
                    "started_at": stamps.stamp(now)})
        if taken is None:
            raise errors.Conflict(f"Plan {plan_id} is already being executed.")
        return _read_execution(cur, tenant_id, plan_id)


def renew_execution(
    state: state_module.StateStore, tenant_id: str, plan_id: str, holder: str, ttl: float
) -> bool:
    """Extend `holder`'s claim on an unfinished execution; False if it lost it."""
    with state.backend.transaction(write=True, durable=False) as cur:  # a lost renewal only expires sooner
        return claims.renew(cur, state.sql, claims.EXECUTION, (tenant_id, plan_id), holder, ttl)


def claim_execution(
    state: state_module.StateStore, tenant_id: str, plan_id: str, holder: str, ttl: float,
) -> Execution | None:
    """Take over an unfinished execution whose holder stopped renewing; None if it is live or done.

    The takeover carries a new, larger fencing token: the old holder's writes are refused from now.
    """
    with state.backend.transaction(write=True) as cur:
        if claims.take_over(cur, state.sql, claims.EXECUTION, (tenant_id, plan_id), holder, ttl) is None:
            return None
        return _read_execution(cur, tenant_id, plan_id)


def finish_execution(
    state: state_module.StateStore, tenant_id: str, plan_id: str, *, reseller_id: str, events: Events,
) -> bool:
    """Mark the execution finished and enqueue its events (plan.executed) in one transaction.

    False (and no events) when it was already finished: finishing twice announces nothing twice.
    """
    with state.backend.transaction(write=True) as cur:
        return _finish(cur, tenant_id, plan_id, reseller_id=reseller_id, events=events)


def conclude(
    state: state_module.StateStore,
    plan: plan_store.Plan,
    *,
    results: Sequence[Mapping[str, Any]],
    entities: Iterable[str],
    holder: str,
    events_of: Callable[[plan_store.Plan], Events],
) -> plan_store.Plan:
    """The end of an execution, in one durable transaction: the plan's results (`blocked` when every
    approved action was refused, else `executed`; declined ones do not count), the applied actions
    counted on its run, the execution finished with `events_of(plan)` enqueued, and `holder`'s
    leases on `entities` released.

    When another holder (recovery) recorded the results first, they are kept and nothing is counted
    twice; the plan as it is now is returned either way.
    """
    ran = [r for r in results if r["outcome"] != "declined"]
    status = "blocked" if all(r["outcome"] == "refused" for r in ran) else "executed"
    with state.backend.transaction(write=True) as cur:
        final, recorded = plan_store.record_results_in(cur, plan.tenant_id, plan.id, status=status,
                                                       results=results)
        applied = sum(r["outcome"] == "applied" for r in results)
        if recorded and plan.run_id is not None and applied:  # the operator's last_run counts what ran
            run_store.add_applied_in(cur, plan.tenant_id, plan.run_id, applied)
        _finish(cur, plan.tenant_id, plan.id, reseller_id=plan.reseller_id, events=events_of(final))
        leases.release_in(cur, plan.tenant_id, entities, holder)
    return final


def _finish(cur: Any, tenant_id: str, plan_id: str, *, reseller_id: str, events: Events) -> bool:
    cur.execute(
        "UPDATE executions SET finished_at = ? WHERE tenant_id = ? AND plan_id = ? AND finished_at IS NULL",
        (stamps.stamp(datetime.now(UTC)), tenant_id, plan_id),
    )
    if cur.rowcount != 1:
        return False
    for type_, payload in events:
        outbox.enqueue(cur, reseller_id=reseller_id, tenant_id=tenant_id, type=type_, payload=payload)
    return True


def abandon_execution(state: state_module.StateStore, tenant_id: str, plan_id: str, holder: str) -> bool:
    """Undo an approval before any action was touched (a single-flight collision): the plan is
    `proposed` again, so it can be approved once the entity is free. False if not ours to undo."""
    with state.backend.transaction(write=True) as cur:
        cur.execute(
            "DELETE FROM executions WHERE tenant_id = ? AND plan_id = ? AND holder = ?"
            " AND finished_at IS NULL",
            (tenant_id, plan_id, holder),
        )
        if cur.rowcount != 1:
            return False
        return plan_store.unapprove(cur, tenant_id, plan_id)


def stale_executions(state: state_module.StateStore, *, limit: int = 100) -> list[Execution]:
    """Unfinished executions of every tenant whose holder stopped renewing, oldest expiry first."""
    with state.backend.transaction(write=False) as cur:
        return [_read_execution(cur, tenant_id, plan_id)
                for tenant_id, plan_id in claims.expired(cur, state.sql, claims.EXECUTION, limit=limit)]


def unstarted_approvals(
    state: state_module.StateStore, *, older_than: float, limit: int = 100
) -> list[tuple[str, str]]:
    """(tenant_id, plan_id) of plans approved `older_than` seconds ago that no execution ever recorded:
    the process died between approving and starting."""
    with state.backend.transaction(write=False) as cur:
        cutoff = stamps.stamp(stamps.db_now(cur, state.sql) - timedelta(seconds=older_than))
        cur.execute(
            "SELECT p.tenant_id, p.id FROM plans p WHERE p.status = 'approved' AND p.approved_at <= ?"
            " AND NOT EXISTS (SELECT 1 FROM executions e"
            " WHERE e.tenant_id = p.tenant_id AND e.plan_id = p.id)"
            " ORDER BY p.seq LIMIT ?",
            (cutoff, limit),
        )
        return [(str(r[0]), str(r[1])) for r in cur.fetchall()]


def get_execution(state: state_module.StateStore, tenant_id: str, plan_id: str) -> Execution | None:
    with state.backend.transaction(write=False) as cur:
        try:
            return _read_execution(cur, tenant_id, plan_id)
        except errors.NotFound:
            return None


# --- intents ----------------------------------------------------------------------


def record(
    state: state_module.StateStore,
    *,
    reseller_id: str,
    tenant_id: str,
    plan_id: str,
    idempotency_key: str,
    calls_tool: bool,
    receipt: Mapping[str, Any],
    tool: Mapping[str, Any],
    fence: int | None = None,
) -> Intent:
    """Write a pending intent durably; raises (TemporaryError, Conflict) rather than returning unwritten.

    With `fence` (the execution's fencing token), the intent is written only
    while that claim on the plan's execution is live (on the database's
    clock): a holder that lost its claim to another replica's recovery gets
    ClaimLost, and so never calls the tool the new holder will dispose of.
    """
    intent_id = "int_" + secrets.token_hex(8)
    try:
        receipt_json = json.dumps(dict(receipt), separators=(",", ":"), allow_nan=False)
        tool_json = json.dumps(dict(tool), separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise errors.PermanentError(f"intent is not JSON: {e}") from e
    with state.backend.transaction(write=True) as cur:
        if fence is not None and not claims.fence(cur, state.sql, claims.EXECUTION, (tenant_id, plan_id),
                                                  fence):
            raise ClaimLost(f"plan {plan_id}: claim {fence} no longer holds its execution; the actions not "
                            "yet disposed are left to whoever does")
        cur.execute(
            "INSERT INTO intents (id, reseller_id, tenant_id, plan_id, idempotency_key, calls_tool, receipt,"
            " tool, state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)"
            " ON CONFLICT (tenant_id, plan_id, idempotency_key) DO NOTHING RETURNING id",
            (intent_id, reseller_id, tenant_id, plan_id, idempotency_key, 1 if calls_tool else 0,
             receipt_json, tool_json, stamps.stamp(datetime.now(UTC))),
        )
        if cur.fetchone() is None:
            raise errors.Conflict(f"action {idempotency_key} of plan {plan_id} already has an intent")
        return _read_intent(cur, intent_id)


class ClaimLost(errors.TemporaryError):
    """The execution's claim is no longer this holder's: another one finishes the plan."""


def complete(state: state_module.StateStore, intent: Intent, receipt_id: str, *, events: Events) -> bool:
    """Mark the intent done with its receipt and enqueue its webhook events, in one transaction.

    False (and no events) if it was already completed, so recovery racing a
    slow executor never announces one receipt twice.
    """
    with state.backend.transaction(write=True) as cur:
        cur.execute(
            "UPDATE intents SET state = 'completed', receipt_id = ?, completed_at = ?"
            " WHERE id = ? AND state = 'pending'",
            (receipt_id, stamps.stamp(datetime.now(UTC)), intent.id),
        )
        if cur.rowcount != 1:
            return False
        for type_, payload in events:
            outbox.enqueue(cur, reseller_id=intent.reseller_id, tenant_id=intent.tenant_id, type=type_,
                           payload=payload)
        return True


def settle(
    state: state_module.StateStore,
    intent: Intent | None,
    new: receipt_store.NewReceipt,
    events_of: Callable[[receipt_store.Receipt], Events],
) -> receipt_store.Receipt:
    """Write an action's receipt, complete its intent and enqueue its webhook events: one transaction.

    So a receipt, its intent's completion and its events are all committed or
    none is. If the intent was completed already (recovery racing a slow
    executor), nothing is written and the receipt recorded then is returned,
    so one action is never announced twice. A receipt without an intent (a
    DEDUP, an intent that could not be written) is written with its events.
    AlreadyApplied when an `applied` receipt for the key exists already.
    """
    lock = state.sql.for_update
    prepared = receipt_store.prepare(new)  # before the write lock is taken
    with state.backend.transaction(write=True, durable=False) as cur:  # synced by the next durable commit
        if intent is not None:
            cur.execute(f"SELECT state, receipt_id FROM intents WHERE id = ?{lock}", (intent.id,))
            row = cur.fetchone()
            if row is not None and row[0] == "completed" and row[1] is not None:
                cur.execute(f"SELECT {receipt_store.COLUMNS} FROM receipts WHERE id = ?", (row[1],))
                written = cur.fetchone()
                if written is not None:
                    return receipt_store.from_row(written)
        receipt = receipt_store.append(cur, state.sql, prepared)
        if intent is not None:
            cur.execute(
                "UPDATE intents SET state = 'completed', receipt_id = ?, completed_at = ?"
                " WHERE id = ? AND state = 'pending'",
                (receipt.id, stamps.stamp(datetime.now(UTC)), intent.id),
            )
        for type_, payload in events_of(receipt):
            outbox.enqueue(cur, reseller_id=new.reseller_id, tenant_id=new.tenant_id, type=type_,
                           payload=payload)
        return receipt


def for_plan(state: state_module.StateStore, tenant_id: str, plan_id: str) -> dict[str, Intent]:
    """The plan's intents by action idempotency key."""
    with state.backend.transaction(write=False) as cur:
        cur.execute(f"SELECT {_INTENT_COLUMNS} FROM intents WHERE tenant_id = ? AND plan_id = ?",
                    (tenant_id, plan_id))
        return {i.idempotency_key: i for i in map(_intent, cur.fetchall())}


def pending_elsewhere(
    state: state_module.StateStore, tenant_id: str, idempotency_key: str, plan_id: str
) -> Intent | None:
    """A pending tool-calling intent for this key in another plan: an effect that may be under way."""
    with state.backend.transaction(write=False) as cur:
        cur.execute(
            f"SELECT {_INTENT_COLUMNS} FROM intents WHERE tenant_id = ? AND idempotency_key = ?"
            " AND state = 'pending' AND calls_tool = 1 AND plan_id <> ? LIMIT 1",
            (tenant_id, idempotency_key, plan_id),
        )
        row = cur.fetchone()
    return None if row is None else _intent(row)


# --- helpers ----------------------------------------------------------------------


def _read_intent(cur: Any, intent_id: str) -> Intent:
    cur.execute(f"SELECT {_INTENT_COLUMNS} FROM intents WHERE id = ?", (intent_id,))
    row = cur.fetchone()
    if row is None:
        raise errors.NotFound(f"no intent '{intent_id}'")
    return _intent(row)


def _read_execution(cur: Any, tenant_id: str, plan_id: str) -> Execution:
    cur.execute(f"SELECT {_EXECUTION_COLUMNS} FROM executions WHERE tenant_id = ? AND plan_id = ?",
                (tenant_id, plan_id))
    row = cur.fetchone()
    if row is None:
        raise errors.NotFound(f"no execution of plan '{plan_id}'")
    return _execution(row)


def _intent(row: Any) -> Intent:
    return Intent(
        id=row[0], reseller_id=row[1], tenant_id=row[2], plan_id=row[3], idempotency_key=row[4],
        calls_tool=bool(row[5]), receipt=json.loads(row[6]), tool=json.loads(row[7]), state=row[8],
        receipt_id=row[9], created_at=datetime.fromisoformat(row[10]), completed_at=stamps.parse(row[11]),
    )


def _execution(row: Any) -> Execution:
    return Execution(
        tenant_id=row[0], plan_id=row[1], only_actions=json.loads(row[2]) if row[2] is not None else None,
        holder=row[3], started_at=datetime.fromisoformat(row[4]), expires_at=datetime.fromisoformat(row[5]),
        finished_at=stamps.parse(row[6]), token=int(row[7]),
    )
