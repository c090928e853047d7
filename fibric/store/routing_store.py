"""Event routing: each stored event is handed, once, to every active operator subscribed to its type.

Ingest only stores an event (`routed_at` NULL); routing is a separate,
durable step so that an event stored just before a crash is still routed
after the restart, and events ingested by any replica are routed by
whichever replica gets there first. One transaction claims a batch of
unrouted events (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so replicas take
disjoint batches; SQLite: the database's write lock), queues one row per
(subscribed operator, event) in `run_queue`, and stamps the events routed.
An event nobody subscribes to is stamped routed with no queue row: stored,
routed nowhere, not an error.

Queue rows wait there until a run of that operator for that entity consumes
them (fibric/store/run_store.py); all rows of one (operator, entity) waiting
when a run starts go into that one run, which is how a flood coalesces.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fibric.store import stamps
from fibric.store import state as state_module

DEFAULT_BATCH = 500


@dataclass(frozen=True)
class Routed:
    """What one routing pass did: events claimed and stamped, and queue rows written."""

    events: int
    queued: int


@dataclass(frozen=True)
class PendingKey:
    """An (operator, entity) with queued events and no run of it in progress."""

    tenant_id: str
    operator_id: str
    entity_key: str


def subscribed(spec: Mapping[str, Any], event_type: str) -> bool:
    """True when an active operator's `subscribes` globs (fnmatch, case-sensitive) match the type."""
    if spec.get("lifecycle", "active") != "active":
        return False
    patterns = spec.get("subscribes") or []
    return any(isinstance(p, str) and fnmatch.fnmatchcase(event_type, p) for p in patterns)


def route_pending(state: state_module.StateStore, *, limit: int = DEFAULT_BATCH) -> Routed:
    """Route up to `limit` unrouted events (oldest first) in one transaction. Blocking."""
    lock = state.sql.skip_locked
    now = stamps.stamp(datetime.now(UTC))
    with state.backend.transaction(write=True, durable=False) as cur:  # see backends.transaction
        cur.execute(
            "SELECT seq, id, tenant_id, type, entity_key FROM events WHERE routed_at IS NULL"
            f" ORDER BY seq LIMIT ?{lock}",
            (limit,),
        )
        rows = cur.fetchall()
        if not rows:
            return Routed(0, 0)
        operators = {t: _operators(cur, t) for t in {r[2] for r in rows}}
        queued = 0
        for _, event_id, tenant_id, event_type, entity_key in rows:
            for operator_id, spec in operators[tenant_id]:
                if subscribed(spec, event_type):
                    cur.execute(
                        "INSERT INTO run_queue (tenant_id, operator_id, entity_key, event_id, queued_at)"
                        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (operator_id, event_id) DO NOTHING",
                        (tenant_id, operator_id, entity_key, event_id, now),
                    )
                    queued += cur.rowcount
        for chunk in _chunks([int(r[0]) for r in rows], 200):
            cur.execute(
                f"UPDATE events SET routed_at = ? WHERE routed_at IS NULL AND seq IN ({_marks(chunk)})",
                (now, *chunk),
            )
    return Routed(len(rows), queued)


def pending_keys(
    state: state_module.StateStore, *, now: datetime | None = None, limit: int = 100
) -> list[PendingKey]:
    """(operator, entity) keys with unclaimed queued events and no live lease, fairly across tenants.

    Each tenant's oldest work comes first, in turn (every tenant's oldest key,
    then every tenant's second, ...), so a tenant flooding events cannot push
    another's runs to the back of the line.
    """
    with state.backend.transaction(write=False) as cur:
        moment = now or stamps.db_now(cur, state.sql)
        cur.execute(
            "SELECT tenant_id, operator_id, entity_key FROM ("
            " SELECT tenant_id, operator_id, entity_key, first,"
            " ROW_NUMBER() OVER (PARTITION BY tenant_id ORDER BY first) AS turn FROM ("
            "  SELECT q.tenant_id, q.operator_id, q.entity_key, MIN(q.seq) AS first FROM run_queue q"
            "  WHERE q.run_id IS NULL AND NOT EXISTS (SELECT 1 FROM run_leases l"
            "   WHERE l.tenant_id = q.tenant_id AND l.operator_id = q.operator_id"
            "   AND l.entity_key = q.entity_key AND l.expires_at > ?)"
            "  GROUP BY q.tenant_id, q.operator_id, q.entity_key) keyed) ranked"
            " ORDER BY turn, first LIMIT ?",
            (stamps.stamp(moment), limit),
        )
        return [PendingKey(r[0], r[1], r[2]) for r in cur.fetchall()]


def discard(state: state_module.StateStore, tenant_id: str, operator_id: str) -> int:
    """Drop an operator's unclaimed queued events (it was deleted, paused or drafted); how many."""
    with state.backend.transaction(write=True) as cur:
        cur.execute("DELETE FROM run_queue WHERE tenant_id = ? AND operator_id = ? AND run_id IS NULL",
                    (tenant_id, operator_id))
        return int(cur.rowcount)


def unrouted(state: state_module.StateStore) -> int:
    """How many stored events wait to be routed (tests and diagnostics)."""
    with state.backend.transaction(write=False) as cur:
        cur.execute("SELECT COUNT(*) FROM events WHERE routed_at IS NULL")
        return int(cur.fetchone()[0])


def _operators(cur: Any, tenant_id: str) -> list[tuple[str, dict[str, Any]]]:
    cur.execute("SELECT id, spec FROM objects WHERE tenant_id = ? AND kind = 'Operator'", (tenant_id,))
    return [(r[0], json.loads(r[1])) for r in cur.fetchall()]


def _chunks(values: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _marks(values: list[Any]) -> str:
    return ", ".join("?" for _ in values)


