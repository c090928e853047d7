"""The webhook outbox: events written in the same transaction as the change they report.

A plan proposed, a plan executed, an action disposed, a receipt written: the
code that makes the change calls `enqueue(cur, ...)` on the cursor of its own
write transaction, so the event exists exactly when the change does. A crash
can neither lose one (it is committed with the change) nor announce a change
that rolled back (it rolls back with it). The webhook dispatcher reads
pending rows (`claim`, in its own write transaction), fans each out to the
endpoints subscribed to its type, and marks it dispatched (`mark_dispatched`)
in that same transaction (fibric/store/deliveries.py).

Payloads are the resource as the API shows it, rendered by the caller at the
moment of the change: a `plan.proposed` delivered after approval still shows
the plan as it was proposed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from fibric import errors, ids, timefmt
from fibric.store import backends, dialect, stamps
from fibric.store import state as state_module

EVENT_TYPES = ("plan.proposed", "plan.executed", "action.disposed", "receipt.created", "plan.rejected",
               "plan.expired", "run.failed")
NOTIFY_CHANNEL = "fibric_outbox"  # PostgreSQL: notified on commit of a transaction that enqueued


@dataclass(frozen=True)
class OutboxEvent:
    seq: int
    id: str
    reseller_id: str
    tenant_id: str
    type: str
    payload: dict[str, Any]  # the resource as the API shows it
    created_at: datetime

    def envelope(self) -> dict[str, Any]:
        """The delivered body: an event object wrapping the resource (docs/webhooks.md)."""
        return {
            "id": self.id,
            "object": "event",
            "type": self.type,
            "created_at": timefmt.rfc3339(self.created_at),
            "data": self.payload,
        }


_FIELDS = tuple(f.name for f in fields(OutboxEvent))  # an event's columns are its fields, in order
_COLUMNS = ", ".join(_FIELDS)


def new_event_id() -> str:
    return ids.new_id("webhook_event")


def enqueue(
    cur: Any, *, reseller_id: str, tenant_id: str, type: str, payload: Mapping[str, Any],
    at: datetime | None = None,
) -> str:
    """Add one event on the caller's transaction cursor; returns its id. Never commits by itself."""
    if type not in EVENT_TYPES:
        raise errors.PermanentError(f"webhook event type must be one of {EVENT_TYPES}, not {type!r}")
    try:
        body = json.dumps(dict(payload), separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise errors.PermanentError(f"webhook payload is not JSON: {e}") from e
    event_id = new_event_id()
    cur.execute(
        "INSERT INTO outbox (id, reseller_id, tenant_id, type, payload, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (event_id, reseller_id, tenant_id, type, body, stamps.stamp(at or datetime.now(UTC))),
    )
    notify = backends.dialect_of(cur).notify
    if notify is not None:
        # PostgreSQL delivers a NOTIFY only if and when the transaction commits: every
        # replica's dispatcher wakes at once instead of at its next poll.
        cur.execute(notify, (NOTIFY_CHANNEL,))
    return event_id


def listen_url(state: state_module.StateStore) -> str | None:
    """Where `commits` can listen for this store's commits; None when the store announces none
    (SQLite: a dispatcher polls, and is woken in-process)."""
    backend = state.backend
    return backend.url if isinstance(backend, backends.PostgresBackend) else None


async def commits(url: str) -> AsyncIterator[None]:
    """PostgreSQL at `url`: one item per committed transaction that enqueued, from any replica.

    LISTEN on a connection of its own, which lasts as long as the iteration.
    TemporaryError when it cannot connect or the connection breaks: the
    caller listens again later, and polls meanwhile.
    """
    import psycopg

    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            async for _ in conn.notifies():
                yield None
    except psycopg.Error as e:
        raise errors.TemporaryError(f"cannot LISTEN on PostgreSQL: {e}") from e


def pending(state: state_module.StateStore, *, limit: int = 100) -> list[OutboxEvent]:
    """Undispatched events of every tenant, oldest first."""
    with state.backend.transaction(write=False) as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE dispatched_at IS NULL ORDER BY seq LIMIT ?",
            (limit,),
        )
        return [_event(r) for r in cur.fetchall()]


def history(state: state_module.StateStore, *, after_seq: int = 0, limit: int = 1000) -> list[OutboxEvent]:
    """Every event enqueued after `after_seq`, fanned out or not, oldest first (tests, diagnostics)."""
    with state.backend.transaction(write=False) as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        return [_event(r) for r in cur.fetchall()]


def last_seq(state: state_module.StateStore) -> int:
    """The newest event's place in the outbox (0 when empty)."""
    with state.backend.transaction(write=False) as cur:
        cur.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox")
        return int(cur.fetchone()[0])


def claim(cur: Any, sql: dialect.Dialect, *, limit: int = 100) -> list[OutboxEvent]:
    """Undispatched events, oldest first, locked for this write transaction.

    On PostgreSQL the rows are locked with SKIP LOCKED, so replicas fanning
    out at once take disjoint events; SQLite's write transaction already
    excludes every other writer.
    """
    cur.execute(
        f"SELECT {_COLUMNS} FROM outbox WHERE dispatched_at IS NULL ORDER BY seq LIMIT ?{sql.skip_locked}",
        (limit,),
    )
    return [_event(r) for r in cur.fetchall()]


def mark_dispatched(cur: Any, event_id: str, at: datetime | None = None) -> bool:
    """Mark one event fanned out, on the caller's cursor; False if another dispatcher was first."""
    cur.execute(
        "UPDATE outbox SET dispatched_at = ? WHERE id = ? AND dispatched_at IS NULL",
        (stamps.stamp(at or datetime.now(UTC)), event_id),
    )
    return bool(cur.rowcount == 1)


def _event(row: Any) -> OutboxEvent:
    """The event of one row of `SELECT {_COLUMNS}`."""
    values = dict(zip(_FIELDS, row, strict=True))
    return OutboxEvent(**{**values, "seq": int(values["seq"]), "payload": json.loads(values["payload"]),
                          "created_at": datetime.fromisoformat(values["created_at"])})
