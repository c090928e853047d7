"""Single-flight leases: at most one executor works on a (tenant, entity_key) at a time.

A lease is a claim (claims.py, kind ENTITY): a row keyed by (tenant_id,
entity_key) naming its holder, its fencing token and when it expires. Taking
one is a single upsert that only overwrites an expired row (`INSERT ... ON
CONFLICT DO UPDATE ... WHERE expires_at <= now`), so two
executors racing for one entity, in one process or in many replicas sharing
PostgreSQL, cannot both win: the database's unique key decides, and the
database's clock says what has expired (stamps.db_now), not a replica's. A holder
that dies stops renewing; once its lease expires anyone may take it over.
Holders are opaque strings, one per plan execution (not per process), so two
approvals in one process collide exactly like two in different ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from fibric.store import claims, stamps
from fibric.store import state as state_module


def acquire(
    state: state_module.StateStore, tenant_id: str, entity_key: str, holder: str, ttl: float,
    *, now: datetime | None = None,
) -> claims.Claim | None:
    """Take the lease on (tenant, entity) for `holder` for `ttl` seconds; None if someone live holds it.

    Re-acquiring one's own lease renews it (and keeps its token).
    """
    with state.backend.transaction(write=True, durable=False) as cur:  # the next durable commit syncs it
        moment = now or stamps.db_now(cur, state.sql)
        return claims.take(cur, state.sql, claims.ENTITY, (tenant_id, entity_key), holder, ttl,
                           now=moment, reentrant=True, values={"acquired_at": stamps.stamp(moment)})


def renew(
    state: state_module.StateStore, tenant_id: str, entity_keys: Iterable[str], holder: str, ttl: float,
) -> list[str]:
    """Push the expiry of `holder`'s leases on these entities forward; returns the keys it no longer holds."""
    with state.backend.transaction(write=True, durable=False) as cur:  # a lost renewal only expires sooner
        return [key for key in entity_keys
                if not claims.renew(cur, state.sql, claims.ENTITY, (tenant_id, key), holder, ttl)]


def release(state: state_module.StateStore, tenant_id: str, entity_keys: Iterable[str], holder: str) -> None:
    """Give back `holder`'s leases on these entities (a lease taken over by someone else stays theirs)."""
    with state.backend.transaction(write=True, durable=False) as cur:  # lost: it only expires
        release_in(cur, tenant_id, entity_keys, holder)


def release_in(cur: Any, tenant_id: str, entity_keys: Iterable[str], holder: str) -> None:
    """`release` in the caller's write transaction."""
    for key in entity_keys:
        claims.release(cur, claims.ENTITY, (tenant_id, key), holder)


def holder_of(state: state_module.StateStore, tenant_id: str, entity_key: str) -> str | None:
    """Who holds a live lease on the entity now, if anyone."""
    with state.backend.transaction(write=False) as cur:
        cur.execute(
            "SELECT holder FROM leases WHERE tenant_id = ? AND entity_key = ? AND expires_at > ?",
            (tenant_id, entity_key, stamps.stamp(stamps.db_now(cur, state.sql))),
        )
        row = cur.fetchone()
    return None if row is None else str(row[0])


