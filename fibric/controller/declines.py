"""Actions a person did not approve: every one still gets a receipt, `declined`.

A plan's actions end in one of two ways: the executor disposes of them
(fibric/controller/executor.py), or nobody approves them. The second has
three causes, each recorded as a `declined` receipt per action, so an auditor
sees every proposed action's fate:

- left out of an approval's `only_actions` (the executor writes these while
  it runs the others, so recovery finishes them like any other action);
- the plan was rejected (POST /v1/plans/{id}/reject, with a reason);
- the plan expired: nobody decided before its `expires_at`.

Rejection and expiry close the plan and write all its receipts and webhook
events in one transaction, after a compare-and-set on `proposed`: a plan is
approved, rejected or expired, never two of them. A declined receipt carries
the decision the plan showed (nothing is evaluated again: nothing runs) and
the rule `declined`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fibric import errors, store, timefmt
from fibric.controller import executor
from fibric.store import outbox, plan_store, receipt_store, views

log = logging.getLogger(__name__)

def reject(state: store.StateStore, tenant_id: str, plan_id: str, *, reason: str,
           by: Mapping[str, Any], digest: str | None = None) -> plan_store.Plan:
    """Reject a proposed plan: each action declined, the plan `rejected`, all in one transaction.

    NotApprovable when it is not proposed (approved, disposed, rejected) or has
    expired (then the expiry is recorded first, so the answer and the record
    agree); Conflict when `digest` is not the plan's.
    """
    plan = plan_store.get(state, tenant_id, plan_id)
    now = datetime.now(UTC)
    if plan.expired(now):
        expire(state, plan, now=now)
        raise plan_store.not_approvable(plan, now=now)
    if plan.status != "proposed":
        raise plan_store.not_approvable(plan)
    if digest is not None and digest != plan.digest:
        raise errors.Conflict(f"Plan {plan.id} does not match the digest you rejected ({digest}); its "
                              f"digest is {plan.digest}. Review the plan again before rejecting it.")
    who = by.get("key_name") or by.get("key_id")
    closed = _close(state, plan, status="rejected", reason=reason, by=by, now=now,
                    why=f"plan rejected by {who}: {reason}")
    if closed is None:
        raise plan_store.not_approvable(plan_store.get(state, tenant_id, plan_id))
    return closed


def expire(
    state: store.StateStore, plan: plan_store.Plan, *, now: datetime | None = None
) -> plan_store.Plan | None:
    """Close a plan whose time ran out; None when another decision closed it first."""
    now = now or datetime.now(UTC)
    stamp = timefmt.rfc3339(plan.expires_at) or "?"
    return _close(state, plan, status="expired", reason=f"nobody approved it before {stamp}", by=None,
                  now=now, why=f"plan expired at {stamp} without an approval")


def expire_due(state: store.StateStore, *, now: datetime | None = None, limit: int = 100) -> int:
    """One pass: close every plan past its `expires_at` (up to `limit`); how many were closed."""
    now = now or datetime.now(UTC)
    closed = 0
    for tenant_id, plan_id in plan_store.due(state, now, limit):
        try:
            plan = plan_store.get(state, tenant_id, plan_id)
            if plan.expired(now) and expire(state, plan, now=now) is not None:
                closed += 1
        except errors.FibricError as e:  # one plan's trouble must not keep the others open
            log.warning("could not expire plan %s: %s", plan_id, e)
    return closed


def _close(state: store.StateStore, plan: plan_store.Plan, *, status: str, reason: str,
           by: Mapping[str, Any] | None, now: datetime, why: str) -> plan_store.Plan | None:
    operator = plan.operator_name or plan.operator_id
    prepared = [receipt_store.prepare(
                    receipt_store.NewReceipt(**executor.declined_fields(plan, operator, a, why, by)), at=now)
                for a in plan.actions]
    try:
        with state.backend.transaction(write=True) as cur:  # durable: the decision is answered after it
            written = [receipt_store.append(cur, state.sql, p) for p in prepared]
            results = [executor.result_of(r) for r in written]
            if not plan_store.close_in(cur, plan.tenant_id, plan.id, status=status, reason=reason, by=by,
                                       results=results, now=now):
                raise _Lost()
            events = [e for r in written for e in executor.receipt_events(r)]
            closed = plan_store.read_in(cur, plan.tenant_id, plan.id)
            for type_, payload in [*events, (f"plan.{status}", views.plan(closed))]:
                outbox.enqueue(cur, reseller_id=plan.reseller_id, tenant_id=plan.tenant_id, type=type_,
                               payload=payload)
    except _Lost:
        return None
    return closed


class _Lost(Exception):
    """Another decision closed the plan first: the receipts written for this one are rolled back."""
