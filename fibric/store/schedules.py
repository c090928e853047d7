"""When each scheduled operator last fired, kept in the store so schedules survive restarts.

The scheduler computes an operator's next firing from its cron expression
and this time. Firing is a compare-and-set on the stored time, so of several
replicas (or a replica and its restarted self) exactly one fires a given
tick, and after downtime the stored time jumps straight to now: a missed
schedule runs once, not once per missed tick. Ticks are judged on the
database's clock (`database_now`), so a replica whose clock runs fast does
not fire early, nor push the stored time ahead of the others'.
"""

from __future__ import annotations

from datetime import datetime

from fibric.store import stamps
from fibric.store import state as state_module


def database_now(state: state_module.StateStore) -> datetime:
    """The store's clock, which every replica's scheduler reads (stamps.db_now)."""
    with state.backend.transaction(write=False) as cur:
        return stamps.db_now(cur, state.sql)


def last_fired(state: state_module.StateStore) -> dict[tuple[str, str], datetime]:
    """(tenant_id, operator_id) -> when it last fired (or started being scheduled), for every operator."""
    with state.backend.transaction(write=False) as cur:
        cur.execute("SELECT tenant_id, operator_id, last_fired_at FROM schedules")
        return {(r[0], r[1]): datetime.fromisoformat(r[2]) for r in cur.fetchall()}


def advance(
    state: state_module.StateStore, tenant_id: str, operator_id: str, previous: datetime | None, to: datetime
) -> bool:
    """Move the operator's last firing from `previous` (None: never recorded) to `to`; False if raced.

    True means this caller owns the firing (or, from None, the first record).
    """
    with state.backend.transaction(write=True) as cur:
        if previous is None:
            cur.execute(
                "INSERT INTO schedules (tenant_id, operator_id, last_fired_at) VALUES (?, ?, ?)"
                " ON CONFLICT (tenant_id, operator_id) DO NOTHING",
                (tenant_id, operator_id, stamps.stamp(to)),
            )
        else:
            cur.execute(
                "UPDATE schedules SET last_fired_at = ? WHERE tenant_id = ? AND operator_id = ?"
                " AND last_fired_at = ?",
                (stamps.stamp(to), tenant_id, operator_id, stamps.stamp(previous)),
            )
        return bool(cur.rowcount == 1)


def forget(state: state_module.StateStore, tenant_id: str, operator_id: str) -> None:
    """Drop an operator's record (it was deleted or lost its schedule): a new schedule starts afresh."""
    with state.backend.transaction(write=True) as cur:
        cur.execute("DELETE FROM schedules WHERE tenant_id = ? AND operator_id = ?", (tenant_id, operator_id))


