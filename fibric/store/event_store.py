"""Ingested events: one canonical envelope per (tenant, idempotency_key).

Events are how systems sense into Fibric. Dedup is the table's unique
constraint on (tenant_id, idempotency_key), not a read-then-write, so two
requests (or two replicas) ingesting the same key at once store one row and
both answer with it. Tenancy is stamped from the caller's key by whoever calls
`ingest`; nothing here takes a tenant from the event itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fibric import errors, ids
from fibric.store import pages, stamps
from fibric.store import state as state_module

_COLUMNS = (
    "seq, id, reseller_id, tenant_id, type, entity_key, idempotency_key, occurred_at, received_at, data"
)


@dataclass(frozen=True)
class Event:
    seq: int
    id: str
    reseller_id: str
    tenant_id: str
    type: str
    entity_key: str
    idempotency_key: str
    occurred_at: datetime
    received_at: datetime
    data: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Ingested:
    """The stored envelope, and whether an earlier ingest of the same key already stored it."""

    event: Event
    dedup: bool


def ingest(
    state: state_module.StateStore,
    *,
    reseller_id: str,
    tenant_id: str,
    type: str,
    entity_key: str,
    idempotency_key: str,
    data: Mapping[str, Any],
    occurred_at: datetime | None = None,
    trace_context: str | None = None,
) -> Ingested:
    """Store the event once per (tenant, idempotency_key); a repeat returns the original.

    `trace_context`: the ingest's span as a W3C traceparent (fibric/tracing.py), for the run's link.
    """
    try:
        payload = json.dumps(data, separators=(",", ":"), allow_nan=False)
    except ValueError as e:  # NaN or Infinity: not JSON, and never a real measurement
        raise errors.SpecInvalid(errors.SpecProblem(str(e), path="data")) from e
    received_at = datetime.now(UTC)
    occurred = occurred_at if occurred_at is not None else received_at
    event_id = ids.new_id("event")
    with state.backend.transaction(write=True) as cur:
        cur.execute(
            "INSERT INTO events (id, reseller_id, tenant_id, type, entity_key, idempotency_key,"
            " occurred_at, received_at, data, trace_context) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING seq",
            (event_id, reseller_id, tenant_id, type, entity_key, idempotency_key,
             stamps.stamp(occurred), stamps.stamp(received_at), payload, trace_context),
        )
        inserted = cur.fetchone()
        if inserted is not None:
            return Ingested(
                Event(int(inserted[0]), event_id, reseller_id, tenant_id, type, entity_key, idempotency_key,
                      occurred.astimezone(UTC), received_at, dict(data)),
                dedup=False,
            )
        # Someone stored this key first (maybe a moment ago, in another process):
        # under READ COMMITTED (PostgreSQL) and BEGIN IMMEDIATE (SQLite) their row is visible now.
        cur.execute(
            f"SELECT {_COLUMNS} FROM events WHERE tenant_id = ? AND idempotency_key = ?",
            (tenant_id, idempotency_key),
        )
        row = cur.fetchone()
    if row is None:  # the unique constraint said it exists; only a broken database gets here
        raise errors.TemporaryError("event vanished while deduplicating; retry")
    return Ingested(_event(row), dedup=True)


def trace_contexts(state: state_module.StateStore, tenant_id: str, event_ids: Sequence[str]) -> list[str]:
    """The traceparents the tenant's events were ingested under (the untraced have none)."""
    if not event_ids:
        return []
    marks = ", ".join("?" for _ in event_ids)
    with state.backend.transaction(write=False) as cur:
        cur.execute(f"SELECT trace_context FROM events WHERE tenant_id = ? AND id IN ({marks})"
                    " AND trace_context IS NOT NULL", [tenant_id, *event_ids])
        return [str(row[0]) for row in cur.fetchall()]


def get(state: state_module.StateStore, tenant_id: str, event_id: str) -> Event:
    """The tenant's event by id; NotFound for any other tenant's, like one that never existed."""
    with state.backend.transaction(write=False) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM events WHERE tenant_id = ? AND id = ?", (tenant_id, event_id))
        row = cur.fetchone()
    if row is None:
        raise errors.NotFound(f"No such event: '{event_id}'")
    return _event(row)


def list_events(
    state: state_module.StateStore,
    tenant_id: str,
    *,
    type: str | None = None,
    entity_key: str | None = None,
    limit: int | None = None,
    before_seq: int | None = None,
) -> list[Event]:
    """The tenant's events newest first (by insertion); `before_seq` continues a page."""
    sql, params = pages.newest_first(
        f"SELECT {_COLUMNS} FROM events WHERE tenant_id = ?", [tenant_id],
        [("type", type), ("entity_key", entity_key)], limit=limit, before_seq=before_seq)
    with state.backend.transaction(write=False) as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    return [_event(r) for r in rows]




def _event(row: Any) -> Event:
    return Event(
        seq=int(row[0]),
        id=row[1],
        reseller_id=row[2],
        tenant_id=row[3],
        type=row[4],
        entity_key=row[5],
        idempotency_key=row[6],
        occurred_at=datetime.fromisoformat(row[7]),
        received_at=datetime.fromisoformat(row[8]),
        data=json.loads(row[9]),
    )
