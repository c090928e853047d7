"""Reconciling a Policy compiles its Rego: `Compiled` and `Ready` say whether it did, with the line.

Broken Rego cannot be applied, so these tests write it straight into the store
(an older replica, a manual edit): the controller must still report it
truthfully. With an OPA engine configured, a reconcile pushes the version to
OPA (here the policy tests' OPA-protocol server) and an unreachable OPA is a
TemporaryError for the loop to retry.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from controller_support import apply_yaml, condition, insert, run

from fibric import errors, policies, settings, store
from fibric.controller import Controller, reconcile

T0 = datetime(2026, 6, 14, 9, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)

GOOD = """\
package fibric.guard

import rego.v1

default decision := {"decision": "BLOCK", "rule": "default-deny"}

decision := {"decision": "ALLOW", "rule": "hold"} if {
  input.action.capability == "orders.hold"
}
"""
BROKEN = GOOD.replace('== "orders.hold"', '== ("orders.hold"')  # unclosed on line 8


def spec(name: str, rego: str) -> str:
    body = "".join(f"    {line}\n" for line in rego.splitlines())
    return f"apiVersion: fibric.io/v1\nkind: Policy\nmetadata: {{name: {name}}}\nspec:\n  rego: |\n{body}"


def _load_fake_opa() -> Any:
    """The policy tests' OPA-protocol server (tests/policies is not on this folder's import path)."""
    if "fake_opa" not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "policies" / "fake_opa.py"
        module_spec = importlib.util.spec_from_file_location("fake_opa", path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules["fake_opa"] = module
        module_spec.loader.exec_module(module)
    return sys.modules["fake_opa"]


@pytest.fixture
def fake_opa() -> Iterator[Any]:
    server = _load_fake_opa().FakeOpa().start()
    try:
        yield server
    finally:
        server.stop()


class CountingStore(store.StateStore):
    """The real store, counting status writes."""

    def __init__(self, real: store.StateStore) -> None:
        super().__init__(real.backend)
        self.status_writes = 0

    def set_status(self, obj: store.StoredObject, status: dict[str, Any]) -> bool:
        self.status_writes += 1
        return super().set_status(obj, status)


def reconciled(
    state: store.StateStore, tenant: store.Tenant, name: str = "guard", now: datetime = T0,
    reconciler: reconcile.Reconciler = reconcile.reconcile_policy,
) -> store.StoredObject:
    assert reconciler(state, state.get_object(tenant.id, "Policy", name), now) == reconcile.Result()
    return state.get_object(tenant.id, "Policy", name)


def test_a_policy_that_compiles_is_compiled_and_ready_with_its_sha256(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    apply_yaml(state, tenant.id, spec("guard", GOOD))
    obj = reconciled(state, tenant)
    assert condition(obj, "Compiled") == {
        "type": "Compiled", "status": "True", "reason": "Compiled",
        "message": "query data.fibric.guard.decision", "last_transition_time": "2026-06-14T09:00:00Z"}
    assert condition(obj, "Ready")["status"] == "True"
    assert obj.status["sha256"] == policies.source_sha256(obj.spec["rego"])
    assert obj.status["observed_generation"] == 1


def test_rego_that_does_not_compile_is_reported_with_its_line(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    insert(state, tenant.id, spec("guard", BROKEN))
    obj = reconciled(state, tenant)
    compiled = condition(obj, "Compiled")
    assert (compiled["status"], compiled["reason"]) == ("False", "CompileError")
    assert "guard.rego:8:" in compiled["message"]
    assert "unclosed" in compiled["message"]
    ready = condition(obj, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "CompileError")
    assert ready["message"] == compiled["message"]
    assert obj.status["sha256"] == policies.source_sha256(obj.spec["rego"])


def test_fixing_the_rego_flips_the_condition_and_the_hash(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    reconciler = reconcile.policy_reconciler()  # with its cache: a new version must not read the old one
    broken = insert(state, tenant.id, spec("guard", BROKEN))
    before = reconciled(state, tenant, reconciler=reconciler)
    with state.tenant_transaction(tenant.id) as tx:
        tx.update(broken, {**broken.spec, "rego": GOOD}, {})
    after = reconciled(state, tenant, now=T1, reconciler=reconciler)
    assert condition(after, "Compiled")["status"] == "True"
    assert condition(after, "Compiled")["last_transition_time"] == "2026-06-14T09:05:00Z"
    assert after.status["sha256"] == policies.source_sha256(GOOD) != before.status["sha256"]
    assert after.status["observed_generation"] == 2


@pytest.mark.parametrize("rego", [GOOD, BROKEN], ids=["compiles", "broken"])
def test_an_unchanged_policy_is_not_written_again(
    state: store.StateStore, tenant: store.Tenant, rego: str
) -> None:
    insert(state, tenant.id, spec("guard", rego))
    counting = CountingStore(state)
    reconciler = reconcile.policy_reconciler()
    first = reconciled(counting, tenant, reconciler=reconciler)
    assert counting.status_writes == 1
    again = reconciled(counting, tenant, now=T1, reconciler=reconciler)
    assert counting.status_writes == 1
    assert again.status == first.status


def test_with_opa_configured_reconcile_pushes_the_policy(
    state: store.StateStore, tenant: store.Tenant, fake_opa: Any
) -> None:
    apply_yaml(state, tenant.id, spec("guard", GOOD))
    engine = policies.OpaEngine(fake_opa.url, timeout=2.0)
    try:
        obj = reconciled(state, tenant, reconciler=reconcile.policy_reconciler(engine))
        ready = condition(obj, "Ready")
        assert (ready["status"], ready["reason"]) == ("True", "Loaded")
        assert f"fibric/{policies.source_sha256(GOOD)}" in fake_opa.modules
        decision = policies.evaluate(
            engine, policies.compile(GOOD).with_id(obj.id),
            {"action": {"capability": "orders.hold"}})
        assert (decision.decision, decision.rule) == (policies.Verdict.ALLOW, "hold")
    finally:
        engine.close()


def test_the_controller_loop_pushes_policies_to_its_engine(
    state: store.StateStore, tenant: store.Tenant, fake_opa: Any
) -> None:
    apply_yaml(state, tenant.id, spec("guard", GOOD))
    engine = policies.OpaEngine(fake_opa.url, timeout=2.0)
    try:
        quiet = settings.ControllerSettings(resync_seconds=3600)
        run(Controller(state, quiet, policy_engine=engine).reconcile_all())
    finally:
        engine.close()
    assert f"fibric/{policies.source_sha256(GOOD)}" in fake_opa.modules
    assert condition(state.get_object(tenant.id, "Policy", "guard"), "Ready")["reason"] == "Loaded"


def test_an_unreachable_opa_is_a_temporary_error_for_the_loop(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    apply_yaml(state, tenant.id, spec("guard", GOOD))
    engine = policies.OpaEngine(f"http://127.0.0.1:{port}", timeout=0.5)
    try:
        with pytest.raises(errors.TemporaryError, match="unavailable"):
            reconcile.policy_reconciler(engine)(state, state.get_object(tenant.id, "Policy", "guard"), T0)
    finally:
        engine.close()
