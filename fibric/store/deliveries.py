"""Webhook deliveries: one per (endpoint, event), with every attempt recorded.

The dispatcher (fibric/controller/dispatch.py) moves work through here in
short write transactions, so all of it survives a restart:

- `fan_out` claims undispatched outbox events and, in the same transaction,
  creates a delivery for each enabled endpoint of the tenant subscribed to the
  event's type and marks the event dispatched. A crash before the commit
  leaves the event pending; the unique (webhook_id, event_id) pair means an
  event is never fanned out to one endpoint twice.
- `claim_due` takes deliveries whose `next_attempt_at` has come, stamps them
  with a claim token and pushes `next_attempt_at` out by a lease: a
  dispatcher that dies mid-send loses the claim when the lease ends and
  another takes over. On PostgreSQL rows are taken FOR UPDATE SKIP LOCKED, so
  replicas never claim the same delivery at once.
- `record` writes one attempt and the delivery's next state, only if the
  claim is still this dispatcher's.

The body is stored as the exact bytes sent, so every retry carries the same
payload and the same `webhook-id`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any

from fibric import errors, ids, timefmt
from fibric.store import claims, outbox, pages, stamps, webhook_store
from fibric.store import state as state_module

STATUSES = ("pending", "delivered", "failed")
TEST_EVENT = "webhook.test"
CANDIDATES = 4  # claim_due ranks this many times what it takes, for dispatchers racing on one queue


@dataclass(frozen=True)
class Delivery:
    seq: int
    id: str
    reseller_id: str
    tenant_id: str
    webhook_id: str
    event_id: str
    event_type: str
    body: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    claim: str | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


_FIELDS = tuple(f.name for f in fields(Delivery))  # a delivery's columns are its fields, in order
_COLUMNS = ", ".join(_FIELDS)


@dataclass(frozen=True)
class Attempt:
    delivery_id: str
    number: int
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None


@dataclass(frozen=True)
class Outcome:
    """What the dispatcher decided after one attempt (fibric/controller/dispatch.py owns the rules)."""

    attempt: Attempt
    status: str  # pending (retry at next_attempt_at), delivered or failed
    next_attempt_at: datetime | None
    gone: bool = False  # 410: disable the endpoint
    disable_after_seconds: float = 24 * 3600


def new_id() -> str:
    return ids.new_id("delivery")


def fan_out(state: state_module.StateStore, *, now: datetime | None = None, limit: int = 100) -> int:
    """Turn up to `limit` outbox events into deliveries, due at once; how many events were fanned out.

    Due on the database's clock, which claims read, unless `now` is given (a test driving time).
    """
    with state.backend.transaction(write=True) as cur:
        now = now or stamps.db_now(cur, state.sql)
        events = outbox.claim(cur, state.sql, limit=limit)
        endpoints: dict[str, list[webhook_store.Endpoint]] = {}
        for event in events:
            if event.tenant_id not in endpoints:
                endpoints[event.tenant_id] = webhook_store.of_tenant(cur, event.tenant_id)
            body = json.dumps(event.envelope(), separators=(",", ":"), ensure_ascii=False)
            for endpoint in endpoints[event.tenant_id]:
                if endpoint.enabled and endpoint.subscribes(event.type):
                    _insert(cur, endpoint, event.id, event.type, body, now)
            outbox.mark_dispatched(cur, event.id, now)
        return len(events)


def create_test(
    state: state_module.StateStore, endpoint: webhook_store.Endpoint, *, now: datetime
) -> Delivery:
    """A `webhook.test` delivery to this one endpoint, due now."""
    event_id = outbox.new_event_id()
    envelope = {
        "id": event_id, "object": "event", "type": TEST_EVENT, "created_at": timefmt.rfc3339(now),
        "data": {"webhook_id": endpoint.id, "message": "A test event from Fibric."},
    }
    body = json.dumps(envelope, separators=(",", ":"))
    with state.backend.transaction(write=True) as cur:
        delivery_id = _insert(cur, endpoint, event_id, TEST_EVENT, body, now)
        return _read(cur, endpoint.tenant_id, delivery_id)


def claim_due(
    state: state_module.StateStore,
    *,
    now: datetime | None = None,
    lease_seconds: float,
    limit: int,
    per_tenant: int | None = None,
    busy: Mapping[str, int] | None = None,
) -> list[Delivery]:
    """Take up to `limit` due deliveries for `lease_seconds`; each carries its claim token.

    Fair across tenants: each tenant's oldest due deliveries come first, in
    turn (every tenant's first, then every tenant's second, ...), and a
    tenant gets at most `per_tenant` minus what it already has in flight
    (`busy`), so one tenant's backlog never fills the claim. What is due, and
    for how long the claim holds, is judged on the database's clock unless
    `now` is given (a test driving time).
    """
    busy = busy or {}
    cap = per_tenant if per_tenant is not None else limit
    allowance = {t: cap - n for t, n in busy.items()}
    wanted = limit + sum(max(0, n) for n in busy.values())
    lock = state.sql.skip_locked
    claimed: list[Delivery] = []
    with state.backend.transaction(write=True) as cur:
        now = now or stamps.db_now(cur, state.sql)
        until = stamps.stamp(now + timedelta(seconds=lease_seconds))
        # Window functions cannot take row locks (PostgreSQL): rank first, then lock what was
        # chosen. Ranked beyond what one pass takes, so a dispatcher whose first choices another
        # one holds (SKIP LOCKED) takes the next in turn rather than nothing.
        cur.execute(
            "SELECT id, tenant_id FROM (SELECT id, tenant_id, next_attempt_at, ROW_NUMBER() OVER ("
            "PARTITION BY tenant_id ORDER BY next_attempt_at, seq) AS turn FROM webhook_deliveries"
            " WHERE status = 'pending' AND next_attempt_at <= ?) ranked WHERE turn <= ?"
            " ORDER BY turn, next_attempt_at LIMIT ?",
            (stamps.stamp(now), cap * CANDIDATES, wanted * CANDIDATES),
        )
        ranked: list[tuple[str, str]] = cur.fetchall()
        while ranked and len(claimed) < limit:
            chosen, ranked = _within_allowance(ranked, allowance, cap, limit - len(claimed))
            if not chosen:
                break
            marks = ", ".join("?" for _ in chosen)
            cur.execute(
                f"SELECT {_COLUMNS} FROM webhook_deliveries WHERE id IN ({marks}) AND status = 'pending'"
                f" AND next_attempt_at <= ?{lock}",
                (*chosen, stamps.stamp(now)),
            )
            for due in [_delivery(row) for row in cur.fetchall()]:
                token = str(claims.next_token(cur, state.sql))  # fences its record (claims.py)
                cur.execute("UPDATE webhook_deliveries SET claim = ?, next_attempt_at = ? WHERE id = ?",
                            (token, until, due.id))
                claimed.append(replace(due, claim=token))
                allowance[due.tenant_id] = allowance.get(due.tenant_id, cap) - 1
    return claimed


def _within_allowance(
    ranked: list[tuple[str, str]], allowance: Mapping[str, int], cap: int, room: int
) -> tuple[list[str], list[tuple[str, str]]]:
    """The first ranked deliveries each tenant's allowance admits, up to `room`; and the rest."""
    left = dict(allowance)
    chosen: list[str] = []
    rest: list[tuple[str, str]] = []
    for delivery_id, tenant_id in ranked:
        if left.get(tenant_id, cap) > 0 and len(chosen) < room:
            left[tenant_id] = left.get(tenant_id, cap) - 1
            chosen.append(delivery_id)
        else:
            rest.append((delivery_id, tenant_id))
    return chosen, rest


def record(
    state: state_module.StateStore, delivery: Delivery, endpoint: webhook_store.Endpoint, outcome: Outcome,
    *, on_database_clock: bool = False,
) -> str | None:
    """Write the attempt and the delivery's next state; returns a reason if the endpoint got disabled.

    Nothing is written when the claim was lost (the lease ran out and another
    dispatcher took the delivery over): that dispatcher records its own attempt.
    `on_database_clock` counts the retry's backoff from the database's clock,
    which the claims that will take it read, rather than the dispatcher's.
    """
    attempt = outcome.attempt
    with state.backend.transaction(write=True) as cur:
        retry_at = outcome.next_attempt_at
        if on_database_clock and retry_at is not None:
            retry_at = stamps.db_now(cur, state.sql) + (retry_at - attempt.started_at)
        cur.execute(
            "UPDATE webhook_deliveries SET status = ?, attempts = attempts + 1, next_attempt_at = ?,"
            " claim = NULL, last_status_code = ?, last_error = ?, updated_at = ? WHERE id = ? AND claim = ?",
            (outcome.status, stamps.stamp(retry_at) if retry_at else None,
             attempt.status_code, attempt.error, stamps.stamp(attempt.started_at), delivery.id,
             delivery.claim),
        )
        if cur.rowcount != 1:
            return None
        cur.execute(
            "INSERT INTO webhook_attempts (delivery_id, tenant_id, number, started_at, duration_ms,"
            " status_code, error) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (delivery.id, delivery.tenant_id, attempt.number, stamps.stamp(attempt.started_at),
             attempt.duration_ms, attempt.status_code, attempt.error),
        )
        if outcome.status == "delivered":
            webhook_store.record_success(cur, endpoint, attempt.started_at)
            return None
        return webhook_store.record_failure(
            cur, endpoint, attempt.started_at, attempt.error or f"HTTP {attempt.status_code}",
            gone=outcome.gone, disable_after_seconds=outcome.disable_after_seconds,
        )


def abandon(state: state_module.StateStore, delivery: Delivery, reason: str, *, now: datetime) -> None:
    """Fail a claimed delivery without an attempt: its webhook was deleted or disabled meanwhile."""
    with state.backend.transaction(write=True) as cur:
        cur.execute(
            "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, claim = NULL,"
            " last_error = ?, updated_at = ? WHERE id = ? AND claim = ?",
            (reason[:500], stamps.stamp(now), delivery.id, delivery.claim),
        )


def prune(state: state_module.StateStore, *, before: datetime) -> int:
    """Forget finished deliveries (and their attempts) and dispatched outbox events older than `before`."""
    stamp = stamps.stamp(before)
    with state.backend.transaction(write=True) as cur:
        cur.execute(
            "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries"
            " WHERE status <> 'pending' AND updated_at < ?)",
            (stamp,),
        )
        cur.execute("DELETE FROM webhook_deliveries WHERE status <> 'pending' AND updated_at < ?", (stamp,))
        removed = cur.rowcount
        cur.execute("DELETE FROM outbox WHERE dispatched_at IS NOT NULL AND dispatched_at < ?", (stamp,))
        return int(removed)


def get(state: state_module.StateStore, tenant_id: str, delivery_id: str) -> Delivery:
    with state.backend.transaction(write=False) as cur:
        return _read(cur, tenant_id, delivery_id)


def list_deliveries(
    state: state_module.StateStore,
    tenant_id: str,
    webhook_id: str,
    *,
    status: str | None = None,
    limit: int | None = None,
    before_seq: int | None = None,
) -> list[Delivery]:
    """The webhook's deliveries, newest first."""
    sql, params = pages.newest_first(
        f"SELECT {_COLUMNS} FROM webhook_deliveries WHERE tenant_id = ? AND webhook_id = ?",
        [tenant_id, webhook_id], [("status", status)], limit=limit, before_seq=before_seq)
    with state.backend.transaction(write=False) as cur:
        cur.execute(sql, params)
        return [_delivery(r) for r in cur.fetchall()]


def attempts_of(
    state: state_module.StateStore, tenant_id: str, delivery_ids: Sequence[str]
) -> dict[str, list[Attempt]]:
    """Every attempt of these deliveries, oldest first, in one query."""
    found: dict[str, list[Attempt]] = {d: [] for d in delivery_ids}
    if not delivery_ids:
        return found
    marks = ", ".join("?" for _ in delivery_ids)
    with state.backend.transaction(write=False) as cur:
        cur.execute(
            "SELECT delivery_id, number, started_at, duration_ms, status_code, error FROM webhook_attempts"
            f" WHERE tenant_id = ? AND delivery_id IN ({marks}) ORDER BY number",
            (tenant_id, *delivery_ids),
        )
        for r in cur.fetchall():
            found[r[0]].append(Attempt(r[0], int(r[1]), datetime.fromisoformat(r[2]), int(r[3]), r[4], r[5]))
    return found


def _insert(cur: Any, endpoint: webhook_store.Endpoint, event_id: str, event_type: str, body: str,
            now: datetime) -> str:
    delivery_id = new_id()
    stamp = stamps.stamp(now)
    cur.execute(
        "INSERT INTO webhook_deliveries (id, reseller_id, tenant_id, webhook_id, event_id, event_type, body,"
        " status, attempts, next_attempt_at, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?) ON CONFLICT (webhook_id, event_id) DO NOTHING",
        (delivery_id, endpoint.reseller_id, endpoint.tenant_id, endpoint.id, event_id, event_type, body,
         stamp, stamp, stamp),
    )
    return delivery_id


def _read(cur: Any, tenant_id: str, delivery_id: str) -> Delivery:
    cur.execute(f"SELECT {_COLUMNS} FROM webhook_deliveries WHERE tenant_id = ? AND id = ?",
                (tenant_id, delivery_id))
    row = cur.fetchone()
    if row is None:
        raise errors.NotFound(f"No such delivery: '{delivery_id}'")
    return _delivery(row)


def _delivery(row: Any) -> Delivery:
    """The delivery of one row of `SELECT {_COLUMNS}`."""
    values = dict(zip(_FIELDS, row, strict=True))
    return Delivery(**{
        **values, "seq": int(values["seq"]), "attempts": int(values["attempts"]),
        "next_attempt_at": stamps.parse(values["next_attempt_at"]),
        "created_at": datetime.fromisoformat(values["created_at"]),
        "updated_at": datetime.fromisoformat(values["updated_at"]),
    })
