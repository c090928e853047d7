"""The sync status of each apply set: what was last applied, what was last tried, and drift.

An apply that fails leaves the last good state live, so "is it applied?" has
two answers: the revision that is live (`revision`, `applied_at`) and the one
last tried (`attempted_revision`, `attempted_at`, `result`, `error`). Keeping
both in one row per (tenant, apply set) lets `fibric status` and `GET /v1/sync`
say that the folder is broken without losing what is running. `drift` lists
live objects of the set that no longer match what was applied, as the folder
watcher last found them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from fibric import errors
from fibric.store import stamps
from fibric.store import state as state_module

Result = Literal["applied", "failed"]
Change = Literal["deleted", "changed"]
_COLUMNS = ("apply_set, revision, applied_at, result, error, attempted_revision, attempted_at, drift,"
            " drift_checked_at")


@dataclass(frozen=True)
class Drift:
    """A live object of the set that differs from what the set declares."""

    kind: str
    name: str
    change: Change


@dataclass(frozen=True)
class SyncStatus:
    apply_set: str
    revision: str | None  # live: the revision of the last good apply (None: never applied)
    applied_at: datetime | None
    result: Result  # of the last attempt
    error: str | None  # the last attempt's, with file:line; None when it applied
    attempted_revision: str
    attempted_at: datetime
    drift: list[Drift] = field(default_factory=list)
    drift_checked_at: datetime | None = None


def record(
    state: state_module.StateStore, tenant_id: str, apply_set: str, revision: str, now: datetime,
    *, error: str | None = None,
) -> None:
    """Record one apply attempt of the set: applied (error None) or failed, keeping what is live.

    A good apply also clears the drift: the live objects match the set again.
    """
    applied = error is None
    live_revision, applied_at = (revision, stamps.stamp(now)) if applied else (None, None)
    with state.backend.transaction(write=True) as cur:
        cur.execute(
            "INSERT INTO sync_status (tenant_id, apply_set, revision, applied_at, result, error,"
            " attempted_revision, attempted_at, drift, drift_checked_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (tenant_id, apply_set) DO UPDATE SET"
            " revision = COALESCE(excluded.revision, sync_status.revision),"
            " applied_at = COALESCE(excluded.applied_at, sync_status.applied_at),"
            " result = excluded.result, error = excluded.error,"
            " attempted_revision = excluded.attempted_revision, attempted_at = excluded.attempted_at,"
            " drift = CASE WHEN excluded.result = 'applied' THEN '[]' ELSE sync_status.drift END,"
            " drift_checked_at = CASE WHEN excluded.result = 'applied' THEN excluded.drift_checked_at"
            " ELSE sync_status.drift_checked_at END",
            (tenant_id, apply_set, live_revision, applied_at, "applied" if applied else "failed", error,
             revision, stamps.stamp(now), "[]", applied_at),
        )


def record_drift(
    state: state_module.StateStore, tenant_id: str, apply_set: str, drift: list[Drift], now: datetime
) -> None:
    """Record what the latest drift check found (an empty list: none); a set never applied is skipped."""
    text = json.dumps([{"kind": d.kind, "name": d.name, "change": d.change} for d in drift])
    with state.backend.transaction(write=True) as cur:
        cur.execute(
            "UPDATE sync_status SET drift = ?, drift_checked_at = ? WHERE tenant_id = ? AND apply_set = ?",
            (text, stamps.stamp(now), tenant_id, apply_set),
        )


def get(state: state_module.StateStore, tenant_id: str, apply_set: str) -> SyncStatus:
    """The set's status in this tenant; NotFound for a set it never applied (another tenant's too)."""
    with state.backend.transaction(write=False) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM sync_status WHERE tenant_id = ? AND apply_set = ?",
                    (tenant_id, apply_set))
        row = cur.fetchone()
    if row is None:
        raise errors.NotFound(f"No such apply set: '{apply_set}'")
    return _status(row)


def list_all(state: state_module.StateStore, tenant_id: str) -> list[SyncStatus]:
    """Every apply set of the tenant, by name."""
    with state.backend.transaction(write=False) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM sync_status WHERE tenant_id = ? ORDER BY apply_set",
                    (tenant_id,))
        rows = cur.fetchall()
    return [_status(r) for r in rows]


def _status(row: tuple[object, ...]) -> SyncStatus:
    drift = [Drift(d["kind"], d["name"], d["change"]) for d in json.loads(str(row[7]))]
    return SyncStatus(
        apply_set=str(row[0]),
        revision=None if row[1] is None else str(row[1]),
        applied_at=stamps.parse(row[2]),  # type: ignore[arg-type]
        result="applied" if row[3] == "applied" else "failed",
        error=None if row[4] is None else str(row[4]),
        attempted_revision=str(row[5]),
        attempted_at=datetime.fromisoformat(str(row[6])),
        drift=drift,
        drift_checked_at=stamps.parse(row[8]),  # type: ignore[arg-type]
    )
