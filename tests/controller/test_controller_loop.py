"""The reconcile loop: notify, fan-out to operators, resync, failure isolation, backoff, shutdown.

Every wait is bounded (`run` and `eventually` time out), so a broken loop fails
instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from datetime import datetime

from controller_support import (
    apply_yaml,
    condition,
    connector,
    eventually,
    insert,
    operator,
    policy,
    run,
    webhook,
)

from fibric import settings, store
from fibric.controller import Controller, reconcile

QUIET = settings.ControllerSettings(resync_seconds=3600)  # only the start-up pass and notify


def status_of(state: store.StateStore, tenant_id: str, kind: str, name: str) -> dict[str, object]:
    return state.get_object(tenant_id, kind, name).status


async def start_quietly(controller: Controller, state: store.StateStore, tenant: store.Tenant) -> None:
    """Start, and return once the start-up pass is over (a sentinel object got reconciled).

    After this, only notify (or a periodic resync) can reconcile a new object.
    """
    await asyncio.to_thread(apply_yaml, state, tenant.id, policy("sentinel"))
    await controller.start()
    await eventually(
        lambda: state.get_object(tenant.id, "Policy", "sentinel").observed_generation,
        what="the start-up pass",
    )


def test_reconcile_all_reconciles_every_object_of_every_tenant(
    state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant
) -> None:
    apply_yaml(state, tenant.id, policy(), operator(), connector())
    apply_yaml(state, other_tenant.id, webhook())
    run(Controller(state, QUIET).reconcile_all())
    objects = state.all_objects()
    assert len(objects) == 4
    assert all(o.observed_generation == o.generation for o in objects)


def test_a_notified_change_is_reconciled(state: store.StateStore, tenant: store.Tenant) -> None:
    async def scenario() -> None:
        controller = Controller(state, QUIET)
        await start_quietly(controller, state, tenant)
        try:
            await asyncio.to_thread(apply_yaml, state, tenant.id, policy())
            # As the API does: from a worker thread, after the write committed.
            await asyncio.to_thread(controller.notify, tenant.id, "Policy", "guard")
            await eventually(lambda: state.get_object(tenant.id, "Policy", "guard").observed_generation,
                             what="the policy to be reconciled")
        finally:
            await controller.stop()

    run(scenario())


def test_a_policy_change_re_reconciles_the_operators_that_use_it(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    insert(state, tenant.id, operator(policy="guard"))

    async def scenario() -> None:
        controller = Controller(state, QUIET)
        await controller.start()
        try:
            await eventually(
                lambda: condition(state.get_object(tenant.id, "Operator", "ship-risk"),
                                  "PolicyResolved")["status"] == "False"
                if status_of(state, tenant.id, "Operator", "ship-risk") else None,
                what="the operator's first reconcile",
            )
            await asyncio.to_thread(apply_yaml, state, tenant.id, policy("guard"))
            controller.notify(tenant.id, "Policy", "guard")  # only the policy is named
            await eventually(
                lambda: condition(state.get_object(tenant.id, "Operator", "ship-risk"),
                                  "Ready")["status"] == "True",
                what="the operator to become ready",
            )
        finally:
            await controller.stop()

    run(scenario())


def test_the_periodic_resync_picks_up_writes_nobody_announced(
    state: store.StateStore, store_location: str, tenant: store.Tenant
) -> None:
    another_process = store.open_store(store_location)

    async def scenario() -> None:
        controller = Controller(state, settings.ControllerSettings(resync_seconds=0.3))
        await start_quietly(controller, state, tenant)
        try:
            await asyncio.to_thread(apply_yaml, another_process, tenant.id, webhook())
            await eventually(
                lambda: status_of(state, tenant.id, "Webhook", "ops-channel").get("observed_generation"),
                what="the resync to reconcile the webhook",
            )
        finally:
            await controller.stop()

    try:
        run(scenario())
    finally:
        another_process.close()


def test_one_failing_object_does_not_stop_the_others(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    def broken(state: store.StateStore, obj: store.StoredObject, now: datetime) -> reconcile.Result:
        raise RuntimeError("webhook reconciler exploded")

    apply_yaml(state, tenant.id, webhook(), policy(), webhook("second-hook"))
    controller = Controller(state, QUIET, reconcilers={**reconcile.RECONCILERS, "Webhook": broken})
    run(controller.reconcile_all())

    assert state.get_object(tenant.id, "Policy", "guard").observed_generation == 1
    for name in ("ops-channel", "second-hook"):
        hook = state.get_object(tenant.id, "Webhook", name)
        ready = condition(hook, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "ReconcileError")
        assert ready["message"] == "webhook reconciler exploded"
        assert hook.observed_generation is None  # nothing was observed


def test_a_failure_is_retried_with_backoff_and_success_clears_it(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    attempts: list[float] = []

    def flaky(state: store.StateStore, obj: store.StoredObject, now: datetime) -> reconcile.Result:
        attempts.append(time.monotonic())
        if len(attempts) <= 2:
            raise RuntimeError(f"attempt {len(attempts)} failed")
        return reconcile.reconcile_webhook(state, obj, now)

    apply_yaml(state, tenant.id, webhook())

    async def scenario() -> None:
        controller = Controller(state, QUIET, reconcilers={"Webhook": flaky}, base_backoff_seconds=0.05)
        await controller.start()
        try:
            await eventually(
                lambda: condition(state.get_object(tenant.id, "Webhook", "ops-channel"),
                                  "Ready")["reason"] == "Enabled"
                if status_of(state, tenant.id, "Webhook", "ops-channel") else None,
                what="the webhook to recover",
            )
        finally:
            await controller.stop()

    run(scenario())
    assert len(attempts) == 3
    # Exponential: the second retry waited about twice as long as the first.
    first_wait, second_wait = attempts[1] - attempts[0], attempts[2] - attempts[1]
    assert first_wait >= 0.04 and second_wait >= 0.09
    ready = condition(state.get_object(tenant.id, "Webhook", "ops-channel"), "Ready")
    assert ready["status"] == "True"


def test_backoff_is_capped(state: store.StateStore, tenant: store.Tenant) -> None:
    attempts: list[float] = []

    def always_broken(state: store.StateStore, obj: store.StoredObject, now: datetime) -> reconcile.Result:
        attempts.append(time.monotonic())
        raise RuntimeError("still broken")

    apply_yaml(state, tenant.id, webhook())

    async def scenario() -> None:
        capped = settings.ControllerSettings(resync_seconds=3600, max_backoff_seconds=0.1)
        controller = Controller(state, capped, reconcilers={"Webhook": always_broken},
                                base_backoff_seconds=0.05)
        await controller.start()
        await asyncio.sleep(1.5)
        await controller.stop()

    run(scenario())
    # Uncapped, 0.05 * 2**n would allow only ~5 attempts in 1.5 s; capped at 0.1 s, many more.
    assert len(attempts) >= 8
    assert max(b - a for a, b in itertools.pairwise(attempts[4:])) < 0.5


def test_queued_keys_are_deduplicated(state: store.StateStore, tenant: store.Tenant) -> None:
    release = threading.Event()
    calls: list[str] = []

    def slow(state: store.StateStore, obj: store.StoredObject, now: datetime) -> reconcile.Result:
        calls.append(obj.name)
        release.wait(5)
        return reconcile.reconcile_policy(state, obj, now)

    apply_yaml(state, tenant.id, policy())

    async def scenario() -> None:
        controller = Controller(state, QUIET, reconcilers={"Policy": slow})
        await controller.start()
        try:
            await eventually(lambda: calls, what="the start-up reconcile to begin")
            for _ in range(50):
                controller.notify(tenant.id, "Policy", "guard")
            await asyncio.sleep(0.05)
            release.set()
            await eventually(lambda: len(calls) >= 2, what="the queued reconcile")
            await asyncio.sleep(0.2)
        finally:
            release.set()
            await controller.stop()

    run(scenario())
    assert calls == ["guard", "guard"]  # the one in flight, then one for all 50 notifications


def test_stop_lets_the_reconcile_in_flight_finish(state: store.StateStore, tenant: store.Tenant) -> None:
    started = threading.Event()

    def slow(state: store.StateStore, obj: store.StoredObject, now: datetime) -> reconcile.Result:
        started.set()
        time.sleep(0.3)
        return reconcile.reconcile_policy(state, obj, now)

    apply_yaml(state, tenant.id, policy())

    async def scenario() -> None:
        controller = Controller(state, QUIET, reconcilers={"Policy": slow})
        await controller.start()
        await asyncio.to_thread(started.wait, 5)
        await controller.stop()
        # Stopped, yet the reconcile that was running got to write its status.
        assert state.get_object(tenant.id, "Policy", "guard").observed_generation == 1

    run(scenario())


def test_notify_is_harmless_before_start_after_stop_and_for_deleted_objects(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    async def scenario() -> None:
        controller = Controller(state, QUIET)
        controller.notify(tenant.id, "Policy", "not-yet")  # buffered
        await controller.start()
        controller.notify(tenant.id, "Operator", "never-existed")
        controller.notify(tenant.id, "Gadget", "unknown-kind")
        await asyncio.to_thread(apply_yaml, state, tenant.id, policy())
        controller.notify(tenant.id, "Policy", "guard")
        await eventually(lambda: state.get_object(tenant.id, "Policy", "guard").observed_generation,
                         what="the controller to keep working")
        await controller.stop()
        controller.notify(tenant.id, "Policy", "guard")  # ignored, no error

    run(scenario())


def test_several_workers_reconcile_everything(state: store.StateStore, tenant: store.Tenant) -> None:
    apply_yaml(state, tenant.id, policy(), *(webhook(f"hook-{n}") for n in range(20)))

    async def scenario() -> None:
        controller = Controller(state, QUIET, workers=4)
        await controller.start()
        try:
            await eventually(
                lambda: all(o.observed_generation == 1 for o in state.all_objects()),
                what="every object to be reconciled",
            )
        finally:
            await controller.stop()

    run(scenario())
