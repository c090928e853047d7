"""Replicas on one PostgreSQL store: every controller reconciles, one records status.

Two controllers here are two replicas' controllers over one PostgreSQL
store, elected as fibric.system elects them. Each one's reconciler writes
its own name into the status it records, so the status shows which replica
wrote it: a status that flapped between replicas' views would show both.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import pytest
from controller_support import apply_yaml, eventually, policy

from fibric import settings, store, system
from fibric.controller import Controller, loop, reconcile

pytestmark = pytest.mark.anyio
QUIET = settings.ControllerSettings(resync_seconds=3600)  # only the start-up pass, notify and takeovers


def signing(name: str, seen: list[str]) -> Mapping[str, reconcile.Reconciler]:
    """A Policy reconciler that records `name` as the writer of the status."""

    def reconcile_policy(state: store.StateStore, obj: store.StoredObject, now: datetime) -> reconcile.Result:
        seen.append(obj.name)
        status = {**obj.status, "by": name, "observed_generation": obj.generation}
        if status != obj.status:
            state.set_status(obj, status)
        return reconcile.Result()

    return {"Policy": reconcile_policy}


def written_by(state: store.StateStore, tenant: store.Tenant) -> object:
    return state.get_object(tenant.id, "Policy", "pol").status.get("by")


async def test_one_replica_records_status_and_another_takes_over_when_it_stops(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    if state.dialect != "postgresql":
        pytest.skip("replicas share a PostgreSQL store; one SQLite store has one process")
    apply_yaml(state, tenant.id, policy("pol"))
    seen_a: list[str] = []
    seen_b: list[str] = []
    a = Controller(state, QUIET, reconcilers=signing("a", seen_a), leader=system.status_leader(state))
    b = Controller(state, QUIET, reconcilers=signing("b", seen_b), leader=system.status_leader(state))
    try:
        await a.start()
        assert await eventually(lambda: written_by(state, tenant) == "a", what="a's status")
        await b.start()

        b.notify(tenant.id, "Policy", "pol")  # b reconciles (its engine needs the policy too)...
        await eventually(lambda: "pol" in seen_b, what="b's reconcile")
        a.notify(tenant.id, "Policy", "pol")
        await eventually(lambda: seen_a.count("pol") >= 2, what="a's second reconcile")
        assert written_by(state, tenant) == "a"  # ...but only the leader records what it saw

        apply_yaml(state, tenant.id, policy("pol").replace("BLOCK", "ALERT"))  # a new generation, via b
        b.notify(tenant.id, "Policy", "pol")
        assert await eventually(lambda: written_by(state, tenant) == "b", what="b's first observation")
        assert state.get_object(tenant.id, "Policy", "pol").observed_generation == 2  # shown at once
        a.notify(tenant.id, "Policy", "pol")
        assert await eventually(lambda: written_by(state, tenant) == "a", what="the leader's view")

        await a.stop()  # a rolling restart: its session, and the leadership, end
        await eventually(lambda: written_by(state, tenant) == "b", timeout=loop.LEAD_SECONDS + 5,
                         what="b taking over and recording status")
    finally:
        await b.stop()
        await a.stop()


async def test_a_lone_store_records_status_without_an_election(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    if state.dialect == "postgresql":
        pytest.skip("the election is PostgreSQL's; this is the embedded store")
    assert system.status_leader(state) is None
    apply_yaml(state, tenant.id, policy("pol"))
    seen: list[str] = []
    alone = Controller(state, QUIET, reconcilers=signing("alone", seen))
    try:
        await alone.start()
        assert await eventually(lambda: written_by(state, tenant) == "alone", what="the status")
    finally:
        await alone.stop()
