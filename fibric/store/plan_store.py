"""Execution plans: what an operator's model proposed, and what became of it.

A plan moves one way: proposed -> approved -> executed | blocked, or
proposed -> rejected (a person said no) | expired (nobody decided before its
`expires_at`). Every move is a compare-and-set on the stored status, so two
approvals racing for one plan cannot both win: the loser sees
`NotApprovable`, exactly like an approval of a plan that was executed long
ago. Operator runs call `propose`; the approve route calls `approve`; the
executor calls `record_results`; rejection and expiry go through
fibric/controller/declines.py, which writes a `declined` receipt per action
in the same transaction as `close_in`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fibric import errors, ids, timefmt
from fibric.store import outbox, pages, stamps, views
from fibric.store import state as state_module

STATUSES = ("proposed", "approved", "executed", "blocked", "rejected", "expired")
DECISIONS = ("ALLOW", "ALERT", "BLOCK", "DEDUP")
_COLUMNS = (
    "seq, id, reseller_id, tenant_id, operator_id, run_id, event_id, proposed_by, status, actions,"
    " policy_id, proposed_at, approver, approved_at, executed_at, results, operator_name, event_ids,"
    " expires_at, decided_by, decided_at, reason"
)


class NotApprovable(errors.Conflict):
    """The plan is not in `proposed` state (any more): it cannot be approved."""


@dataclass(frozen=True)
class Plan:
    seq: int
    id: str
    reseller_id: str
    tenant_id: str
    operator_id: str
    run_id: str | None
    event_id: str | None
    proposed_by: str
    status: str
    # Each action: capability, entity_key, idempotency_key, args, decision.
    actions: list[dict[str, Any]]
    policy_id: str | None
    proposed_at: datetime
    approver: str | None
    approved_at: datetime | None
    executed_at: datetime | None
    # Each result: idempotency_key, decision, outcome, receipt_id (+ rule when refused).
    results: list[dict[str, Any]] | None
    operator_name: str | None = None  # None on plans stored before names were kept
    event_ids: list[str] = field(default_factory=list)  # the events of the run that proposed it
    expires_at: datetime | None = None
    decided_by: dict[str, Any] | None = None  # {key_id, key_name}: the key that approved or rejected
    decided_at: datetime | None = None
    reason: str | None = None  # why it was rejected, or that it expired

    def expired(self, now: datetime) -> bool:
        """Whether nobody can approve it any more because its time ran out (while still proposed)."""
        return self.status == "proposed" and self.expires_at is not None and now >= self.expires_at

    @property
    def digest(self) -> str:
        """sha256 over the actions exactly as proposed (they never change): what an approver saw."""
        return actions_digest(self.actions)


def actions_digest(actions: Sequence[Mapping[str, Any]]) -> str:
    canonical = json.dumps([dict(a) for a in actions], sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False, allow_nan=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def propose(
    state: state_module.StateStore,
    tenant_id: str,
    *,
    operator_id: str,
    actions: Sequence[Mapping[str, Any]],
    policy_id: str | None,
    proposed_by: str = "model",
    run_id: str | None = None,
    event_id: str | None = None,
    event_ids: Sequence[str] = (),
    operator_name: str | None = None,
    ttl: timedelta | None = None,
    trace_context: str | None = None,
) -> Plan:
    """Store a newly proposed plan of the tenant (status `proposed`) and its `plan.proposed` webhook event.

    Both are written in one transaction (fibric/store/outbox.py): the event
    exists exactly when the plan does. A plan of a run is written only while
    that run is still running: one whose lease was taken over was failed as
    interrupted, its events went to the next run, and its proposal is
    refused (Conflict) rather than stored beside the next run's. With a
    `ttl`, the plan expires that long after it is proposed. `trace_context`: the
    proposing run's span as a W3C traceparent, for the execution's link (fibric/tracing.py).
    """
    plan_id = ids.new_id("plan")
    now = datetime.now(UTC)
    expires_at = stamps.stamp(now + ttl) if ttl is not None else None
    with state.backend.transaction(write=True, durable=False) as cur:  # see backends.transaction
        cur.execute("SELECT reseller_id FROM tenants WHERE id = ?", (tenant_id,))
        row = cur.fetchone()
        if row is None:
            raise errors.NotFound(f"no tenant '{tenant_id}'")
        if run_id is not None:
            lock = state.sql.for_update  # a takeover waits for this write
            cur.execute(f"SELECT status FROM runs WHERE tenant_id = ? AND id = ?{lock}", (tenant_id, run_id))
            running = cur.fetchone()
            if running is not None and running[0] != "running":
                raise errors.Conflict(f"run {run_id} is {running[0]} (its lease was taken over): its "
                                      "proposal is not stored; the next run proposes from its events")
        cur.execute(
            "INSERT INTO plans (id, reseller_id, tenant_id, operator_id, run_id, event_id, proposed_by,"
            " status, actions, policy_id, proposed_at, operator_name, event_ids, expires_at, trace_context)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'proposed', ?, ?, ?, ?, ?, ?, ?)",
            (plan_id, row[0], tenant_id, operator_id, run_id, event_id, proposed_by,
             _dumps([dict(a) for a in actions]), policy_id, stamps.stamp(now), operator_name,
             _dumps(list(event_ids) or ([event_id] if event_id else [])), expires_at, trace_context),
        )
        plan = read_in(cur, tenant_id, plan_id)
        outbox.enqueue(cur, reseller_id=row[0], tenant_id=tenant_id, type="plan.proposed",
                       payload=views.plan(plan))
        return plan


def trace_context(state: state_module.StateStore, tenant_id: str, plan_id: str) -> str | None:
    """The traceparent of the run that proposed the tenant's plan (None: untraced, or not a run's)."""
    with state.backend.transaction(write=False) as cur:
        cur.execute("SELECT trace_context FROM plans WHERE tenant_id = ? AND id = ?", (tenant_id, plan_id))
        row = cur.fetchone()
    return str(row[0]) if row is not None and row[0] is not None else None


def get(state: state_module.StateStore, tenant_id: str, plan_id: str) -> Plan:
    """The tenant's plan by id; NotFound for another tenant's, like one that never existed."""
    with state.backend.transaction(write=False) as cur:
        return read_in(cur, tenant_id, plan_id)


def list_plans(
    state: state_module.StateStore,
    tenant_id: str,
    *,
    status: str | None = None,
    operator_id: str | None = None,
    limit: int | None = None,
    before_seq: int | None = None,
) -> list[Plan]:
    """The tenant's plans newest first, optionally of one status and one operator."""
    sql, params = pages.newest_first(
        f"SELECT {_COLUMNS} FROM plans WHERE tenant_id = ?", [tenant_id],
        [("status", status), ("operator_id", operator_id)], limit=limit, before_seq=before_seq)
    with state.backend.transaction(write=False) as cur:
        cur.execute(sql, params)
        return [_plan(r) for r in cur.fetchall()]


def approve(
    state: state_module.StateStore, tenant_id: str, plan_id: str, *, approver: str | None,
    by: Mapping[str, Any] | None = None,
) -> Plan:
    """Move a proposed, unexpired plan to `approved`, recording the key that did (`by`: key_id,
    key_name) and the free-text `approver` note; NotApprovable if it is in any other state or
    expired (the expiry itself is recorded by fibric/controller/declines.py).

    Not synced on its own: the approval is answered only after the executor's
    durable commits (an intent, the execution's end), which sync it too.
    """
    with state.backend.transaction(write=True, durable=False) as cur:
        # The database's clock: recovery on any replica judges an approval's age by it.
        approved_at = stamps.stamp(stamps.db_now(cur, state.sql))
        cur.execute(
            "UPDATE plans SET status = 'approved', approver = ?, approved_at = ?, decided_by = ?,"
            " decided_at = ? WHERE tenant_id = ? AND id = ? AND status = 'proposed'"
            " AND (expires_at IS NULL OR expires_at > ?)",
            (approver, approved_at, _dumps(dict(by)) if by else None, approved_at, tenant_id, plan_id,
             approved_at),
        )
        changed = cur.rowcount == 1
        plan = read_in(cur, tenant_id, plan_id)
    if not changed:
        raise not_approvable(plan)
    return plan


def close_in(
    cur: Any, tenant_id: str, plan_id: str, *, status: str, reason: str, by: Mapping[str, Any] | None,
    results: Sequence[Mapping[str, Any]], now: datetime,
) -> bool:
    """Move a proposed plan to `rejected` or `expired` with its `declined` results, on the caller's
    transaction; False when it was no longer proposed (another decision won)."""
    if status not in ("rejected", "expired"):
        raise errors.PermanentError(f"a plan is closed as rejected or expired, not {status!r}")
    cur.execute(
        "UPDATE plans SET status = ?, reason = ?, decided_by = ?, decided_at = ?, results = ?"
        " WHERE tenant_id = ? AND id = ? AND status = 'proposed'",
        (status, reason, _dumps(dict(by)) if by else None, stamps.stamp(now),
         _dumps([dict(r) for r in results]), tenant_id, plan_id),
    )
    return bool(cur.rowcount == 1)


def due(state: state_module.StateStore, now: datetime, limit: int = 100) -> list[tuple[str, str]]:
    """(tenant_id, plan_id) of proposed plans whose time ran out, oldest deadline first."""
    with state.backend.transaction(write=False) as cur:
        cur.execute("SELECT tenant_id, id FROM plans WHERE status = 'proposed' AND expires_at <= ?"
                    " ORDER BY expires_at LIMIT ?", (stamps.stamp(now), limit))
        return [(str(r[0]), str(r[1])) for r in cur.fetchall()]


def unapprove(cur: Any, tenant_id: str, plan_id: str) -> bool:
    """Move an approved plan back to `proposed`, on the caller's transaction (the executor's undo when
    a single-flight lease is taken before any action ran); False if it is not `approved`."""
    cur.execute(
        "UPDATE plans SET status = 'proposed', approver = NULL, approved_at = NULL, decided_by = NULL,"
        " decided_at = NULL WHERE tenant_id = ? AND id = ? AND status = 'approved'",
        (tenant_id, plan_id),
    )
    return bool(cur.rowcount == 1)


def record_results(
    state: state_module.StateStore,
    tenant_id: str,
    plan_id: str,
    *,
    status: str,
    results: Sequence[Mapping[str, Any]],
) -> Plan:
    """The executor's outcome of an approved plan: `executed` or `blocked`, with one result per action."""
    # Synced by the execution's end (intents.finish_execution), committed next and durably.
    with state.backend.transaction(write=True, durable=False) as cur:
        plan, changed = record_results_in(cur, tenant_id, plan_id, status=status, results=results)
    if not changed:
        raise errors.Conflict(f"Plan {plan_id} is {plan.status}, not approved; its results are not recorded.")
    return plan


def record_results_in(
    cur: Any, tenant_id: str, plan_id: str, *, status: str, results: Sequence[Mapping[str, Any]],
) -> tuple[Plan, bool]:
    """`record_results` in the caller's write transaction: the plan as it is now, and whether this
    call recorded them (False when the plan was no longer `approved`)."""
    if status not in ("executed", "blocked"):
        raise errors.PermanentError(f"a disposed plan is executed or blocked, not {status!r}")
    cur.execute(
        "UPDATE plans SET status = ?, results = ?, executed_at = ?"
        " WHERE tenant_id = ? AND id = ? AND status = 'approved'",
        (status, _dumps([dict(r) for r in results]), stamps.stamp(datetime.now(UTC)), tenant_id, plan_id),
    )
    changed = cur.rowcount == 1
    return read_in(cur, tenant_id, plan_id), changed


def not_approvable(plan: Plan, *, now: datetime | None = None) -> NotApprovable:
    if plan.expired(now or datetime.now(UTC)) or plan.status == "expired":
        return NotApprovable(f"Plan {plan.id} expired at {timefmt.rfc3339(plan.expires_at)} and cannot "
                             "be approved or rejected; its actions are declined.")
    state = {"executed": "already executed", "blocked": "blocked", "approved": "already approved",
             "rejected": "rejected"}
    return NotApprovable(
        f"Plan {plan.id} is {state.get(plan.status, plan.status)} and cannot be approved."
    )


def read_in(cur: Any, tenant_id: str, plan_id: str) -> Plan:
    """The tenant's plan, on the caller's transaction; NotFound for another tenant's."""
    cur.execute(f"SELECT {_COLUMNS} FROM plans WHERE tenant_id = ? AND id = ?", (tenant_id, plan_id))
    row = cur.fetchone()
    if row is None:
        raise errors.NotFound(f"No such plan: '{plan_id}'")
    return _plan(row)


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise errors.PermanentError(f"plan data is not JSON: {e}") from e


def _plan(row: Any) -> Plan:
    return Plan(
        seq=int(row[0]),
        id=row[1],
        reseller_id=row[2],
        tenant_id=row[3],
        operator_id=row[4],
        run_id=row[5],
        event_id=row[6],
        proposed_by=row[7],
        status=row[8],
        actions=json.loads(row[9]),
        policy_id=row[10],
        proposed_at=datetime.fromisoformat(row[11]),
        approver=row[12],
        approved_at=stamps.parse(row[13]),
        executed_at=stamps.parse(row[14]),
        results=json.loads(row[15]) if row[15] is not None else None,
        operator_name=row[16],
        event_ids=json.loads(row[17]) if row[17] is not None else ([row[6]] if row[6] else []),
        expires_at=stamps.parse(row[18]),
        decided_by=json.loads(row[19]) if row[19] is not None else None,
        decided_at=stamps.parse(row[20]),
        reason=row[21],
    )
