"""Scheduled runs: cron on a fake clock, sensing through the real example order system over MCP.

The scheduler never sleeps in these tests: each `tick()` reads the fake
clock, fires what is due and hands back the runs it started. Sensing calls
the example order server's read-only `orders.read` tool for real.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from runs_support import ROOT, all_runs, apply_yaml, example_specs

from fibric import connectors, policies, specs, store, timefmt
from fibric.controller import applier, decide, operator_runs, reconcile, scheduler
from fibric.store import pin_store, plan_store, run_store, schedules

pytestmark = pytest.mark.anyio

ORDERS_SERVER = ROOT / "examples" / "mcp" / "orders_server.py"
START = datetime(2026, 6, 14, 9, 2, tzinfo=UTC)
NOT_SCANNED = "sensed['orders.read'].orders.filter(o, o.status == 'open' && !o.carrier_scanned)"
OPERATOR = f"""
apiVersion: fibric.io/v1
kind: Operator
metadata: {{name: sweeper}}
spec:
  capabilities: [orders.hold]
  policy: ship-risk-guard
  schedule: "*/15 * * * *"
  sense: [{{sense}}]
  rules:
    - when: "size({NOT_SCANNED}) > 0"
      actions:
        - capability: orders.hold
          entity_key: "order:{{{{ {NOT_SCANNED}[0].order_id }}}}"
          args: {{{{reason: not scanned by the carrier}}}}
"""


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def runtime(state: store.StateStore, tenant: store.Tenant, tmp_path: Path
                  ) -> AsyncIterator[connectors.ConnectorRuntime]:
    """The tenant's `magento` connector: the example order server over stdio, on a fresh database."""
    spec = specs.models.ConnectorSpec.model_validate({
        "transport": {"stdio": {"command": sys.executable, "args": [str(ORDERS_SERVER)],
                                "env": {"ORDERS_DB": str(tmp_path / "orders.db")}}},
        "capabilities": {"orders.read": "orders.read", "orders.hold": "orders.hold"},
    })
    pins = pin_store.SQLPinStore(state)
    async with connectors.ConnectorRuntime(pins, connectors.ConnectorSettings()) as rt:
        await rt.ensure(tenant.id, "magento", spec, 1)
        await rt.wait_for(tenant.id, "magento", lambda s: s.connection == "connected", 30)
        yield rt


def make(state: store.StateStore, engine: policies.Engine, runtime: connectors.ConnectorRuntime | None,
         clock: Clock) -> scheduler.Scheduler:
    runner = operator_runs.Runner(state, decide.Decider(state, engine, reconcile.CompileCache()),
                                  runtime=runtime)
    return scheduler.Scheduler(state, runner, clock=clock)


async def tick(sched: scheduler.Scheduler) -> list[object]:
    return [await task for task in await sched.tick()]


def setup(state: store.StateStore, tenant: store.Tenant, sense: str = "orders.read") -> store.StoredObject:
    applier.apply(state, tenant.id, example_specs("policies.yaml"))
    apply_yaml(state, tenant.id, OPERATOR.replace("{sense}", sense))
    return state.get_object(tenant.id, "Operator", "sweeper")


async def test_a_schedule_fires_on_its_ticks_and_senses_through_read_only_tools(
    state: store.StateStore, tenant: store.Tenant, engine: policies.Engine,
    runtime: connectors.ConnectorRuntime,
) -> None:
    operator = setup(state, tenant)
    clock = Clock()
    sched = make(state, engine, runtime, clock)
    assert await tick(sched) == []  # first sight starts the clock; it does not fire at once
    clock.now = START + timedelta(minutes=12)  # 09:14, before the 09:15 tick
    assert await tick(sched) == []
    clock.now = START + timedelta(minutes=13)  # 09:15
    [run] = await tick(sched)
    assert isinstance(run, run_store.Run)
    assert (run.status, run.trigger, run.error) == ("succeeded", "schedule", None)
    assert run.sensed == 3 and run.event_ids == []  # the three seeded orders
    assert run.proposed == 1 and run.plan_id is not None
    plan = plan_store.get(state, tenant.id, run.plan_id)
    [action] = plan.actions
    assert (action["capability"], action["entity_key"], action["decision"]) == (
        "orders.hold", "order:SO-10884", "ALLOW")
    assert await tick(sched) == []  # the same tick never fires twice
    assert [r.operator_id for r in all_runs(state, tenant.id)] == [operator.id]


async def test_after_downtime_a_missed_schedule_runs_once_and_restarts_resume_from_the_store(
    state: store.StateStore, tenant: store.Tenant, engine: policies.Engine,
    runtime: connectors.ConnectorRuntime,
) -> None:
    setup(state, tenant)
    clock = Clock()
    await tick(make(state, engine, runtime, clock))
    clock.now = START + timedelta(hours=5)  # twenty ticks missed while nothing ran
    restarted = make(state, engine, runtime, clock)  # a new process: only the store remembers
    assert len(await tick(restarted)) == 1
    assert await tick(restarted) == []
    clock.now += timedelta(minutes=1)
    assert await tick(make(state, engine, runtime, clock)) == []  # another restart: still not due
    clock.now = START + timedelta(hours=5, minutes=13)  # 14:15
    assert len(await tick(make(state, engine, runtime, clock))) == 1
    assert len(all_runs(state, tenant.id)) == 2


async def test_two_schedulers_fire_a_due_tick_once(
    state: store.StateStore, tenant: store.Tenant, engine: policies.Engine,
    runtime: connectors.ConnectorRuntime,
) -> None:
    setup(state, tenant)
    clock = Clock()
    first, second = make(state, engine, runtime, clock), make(state, engine, runtime, clock)
    await tick(first)
    clock.now = START + timedelta(minutes=30)
    fired = await tick(first) + await tick(second)
    assert len(fired) == 1


async def test_a_replica_whose_clock_runs_fast_fires_nothing_early(
    state: store.StateStore, tenant: store.Tenant, engine: policies.Engine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    operator = setup(state, tenant)
    runner = operator_runs.Runner(state, decide.Decider(state, engine, reconcile.CompileCache()))
    sched = scheduler.Scheduler(state, runner)  # as `fibric serve` builds it: the database's clock
    assert await tick(sched) == []  # first sight starts the operator's clock
    started = schedules.last_fired(state)[(tenant.id, operator.id)]
    monkeypatch.setattr(timefmt, "offset", timedelta(minutes=20))  # past the next */15 tick, on its own

    assert await tick(sched) == []
    assert schedules.last_fired(state)[(tenant.id, operator.id)] == started  # nor pushed ahead
    assert all_runs(state, tenant.id) == []


async def test_a_sense_capability_with_side_effects_fails_the_run_without_calling_it(
    state: store.StateStore, tenant: store.Tenant, engine: policies.Engine,
    runtime: connectors.ConnectorRuntime, tmp_path: Path,
) -> None:
    setup(state, tenant, sense="orders.hold")
    clock = Clock()
    sched = make(state, engine, runtime, clock)
    await tick(sched)
    clock.now = START + timedelta(minutes=15)
    [run] = await tick(sched)
    assert isinstance(run, run_store.Run)
    assert run.status == "failed" and run.plan_id is None
    assert "orders.hold" in (run.error or "") and "readOnlyHint" in (run.error or "")
    result = await runtime.call(tenant.id, "orders.read", {"order_id": "SO-10884"}, None)
    assert result.structured_content["orders"][0]["status"] == "open"  # nothing was held


async def test_paused_operators_do_not_fire_and_resuming_does_not_replay_the_pause(
    state: store.StateStore, tenant: store.Tenant, engine: policies.Engine,
) -> None:
    setup(state, tenant)
    clock = Clock()
    sched = make(state, engine, None, clock)
    await tick(sched)
    apply_yaml(state, tenant.id, OPERATOR.replace("{sense}", "orders.read").replace(
        "schedule:", "lifecycle: paused\n  schedule:"))
    clock.now = START + timedelta(hours=2)
    assert await tick(sched) == []
    assert schedules.last_fired(state) == {}
    apply_yaml(state, tenant.id, OPERATOR.replace("{sense}", "orders.read"))
    assert await tick(sched) == []  # resumed: the clock starts again now
    clock.now += timedelta(minutes=15)
    [run] = await tick(sched)
    assert isinstance(run, run_store.Run)
    assert run.status == "failed" and "no connector runtime" in (run.error or "")  # sensing needs connectors
