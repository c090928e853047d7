"""reconcile(): level-based status of each kind, written only when something changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from controller_support import apply_yaml, condition, connector, insert, operator, policy, webhook

from fibric import store, trust
from fibric.controller import reconcile
from fibric.store import secretbox, vault

T0 = datetime(2026, 6, 14, 9, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


class CountingStore(store.StateStore):
    """The real store, counting status writes (to prove an idle reconcile writes nothing)."""

    def __init__(self, real: store.StateStore) -> None:
        super().__init__(real.backend)
        self.status_writes = 0

    def set_status(self, obj: store.StoredObject, status: dict[str, Any]) -> bool:
        self.status_writes += 1
        return super().set_status(obj, status)


def get(state: store.StateStore, tenant: store.Tenant, kind: str, name: str) -> store.StoredObject:
    return state.get_object(tenant.id, kind, name)


def reconciled(
    state: store.StateStore, tenant: store.Tenant, kind: str, name: str, now: datetime = T0
) -> store.StoredObject:
    result = reconcile.reconcile(state, get(state, tenant, kind, name), now)
    assert result == reconcile.Result()
    return get(state, tenant, kind, name)


def test_reconcile_records_observed_generation_and_conditions(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    apply_yaml(state, tenant.id, policy())
    obj = reconciled(state, tenant, "Policy", "guard")
    assert obj.observed_generation == 1
    assert condition(obj, "Ready") == {"type": "Ready", "status": "True", "reason": "Compiled",
                                       "message": "",
                                       "last_transition_time": "2026-06-14T09:00:00Z"}


def test_an_unchanged_world_is_not_written_again(state: store.StateStore, tenant: store.Tenant) -> None:
    apply_yaml(state, tenant.id, policy(), operator(), connector(), webhook())
    counting = CountingStore(state)
    for kind, name in [("Policy", "guard"), ("Operator", "ship-risk"),
                       ("Connector", "magento"), ("Webhook", "ops-channel")]:
        first = reconciled(counting, tenant, kind, name, T0)
        writes = counting.status_writes
        again = reconciled(counting, tenant, kind, name, T1)
        assert counting.status_writes == writes, f"{kind} was rewritten by an idle reconcile"
        assert again.status == first.status  # transition times included


def test_a_new_generation_is_observed(state: store.StateStore, tenant: store.Tenant) -> None:
    apply_yaml(state, tenant.id, webhook())
    assert reconciled(state, tenant, "Webhook", "ops-channel").observed_generation == 1
    apply_yaml(state, tenant.id, webhook(description="now described"))
    obj = reconciled(state, tenant, "Webhook", "ops-channel", T1)
    assert (obj.generation, obj.observed_generation) == (2, 2)
    # Ready did not change status, so its transition time stays the first one.
    assert condition(obj, "Ready")["last_transition_time"] == "2026-06-14T09:00:00Z"


def test_an_operator_without_its_policy_is_not_ready_until_the_policy_exists(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    insert(state, tenant.id, operator(policy="guard"))  # apply would refuse this dangling reference
    apply_yaml(state, tenant.id, connector())
    obj = reconciled(state, tenant, "Operator", "ship-risk", T0)
    assert condition(obj, "PolicyResolved")["status"] == "False"
    assert condition(obj, "PolicyResolved")["reason"] == "PolicyNotFound"
    assert "'guard'" in condition(obj, "PolicyResolved")["message"]
    assert (condition(obj, "Ready")["status"], condition(obj, "Ready")["reason"]) == (
        "False", "PolicyNotFound")

    apply_yaml(state, tenant.id, policy("guard"))
    obj = reconciled(state, tenant, "Operator", "ship-risk", T1)
    assert condition(obj, "PolicyResolved")["status"] == "True"
    ready = condition(obj, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Reconciled")
    assert ready["last_transition_time"] == "2026-06-14T09:05:00Z"


def test_another_tenants_policy_does_not_resolve(
    state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant
) -> None:
    apply_yaml(state, other_tenant.id, policy("guard"))
    insert(state, tenant.id, operator(policy="guard"))
    obj = reconciled(state, tenant, "Operator", "ship-risk")
    assert condition(obj, "PolicyResolved")["status"] == "False"


def test_unfulfilled_capabilities_are_a_warning_not_unreadiness(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    apply_yaml(state, tenant.id, policy(), connector(capabilities=("orders.hold",)),
               operator(capabilities="orders.hold, orders.notify"))
    obj = reconciled(state, tenant, "Operator", "ship-risk")
    fulfilled = condition(obj, "CapabilitiesFulfilled")
    assert (fulfilled["status"], fulfilled["reason"]) == ("False", "UnfulfilledCapabilities")
    assert "orders.notify" in fulfilled["message"]
    assert "orders.hold" not in fulfilled["message"]
    assert condition(obj, "Ready")["status"] == "True"

    apply_yaml(state, tenant.id, connector("mailer", capabilities=("orders.notify",)))
    obj = reconciled(state, tenant, "Operator", "ship-risk", T1)
    assert condition(obj, "CapabilitiesFulfilled")["status"] == "True"


def test_a_connector_is_disconnected_until_the_connector_runtime_connects_it(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    apply_yaml(state, tenant.id, connector())
    obj = reconciled(state, tenant, "Connector", "magento")
    assert obj.status["connection"] == "disconnected"
    assert obj.status["tools"] == []
    assert obj.status["last_synced_at"] is None
    assert obj.status["last_error"] is None
    connected = condition(obj, "Connected")
    assert (connected["status"], connected["reason"]) == ("False", "NotConnected")
    assert "connector runtime" in connected["message"]
    assert condition(obj, "Ready")["status"] == "False"


def test_a_connector_keeps_what_the_connector_runtime_observed(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    apply_yaml(state, tenant.id, connector())
    obj = reconciled(state, tenant, "Connector", "magento")
    tools = [{"name": "orders.hold", "side_effect": "write"}]
    state.set_status(obj, {**obj.status, "connection": "connected", "tools": tools,
                           "last_synced_at": "2026-06-14T09:01:00Z"})
    obj = reconciled(state, tenant, "Connector", "magento", T1)
    assert obj.status["connection"] == "connected"
    assert obj.status["tools"] == tools
    assert obj.status["last_synced_at"] == "2026-06-14T09:01:00Z"
    assert condition(obj, "Connected")["status"] == "True"
    assert condition(obj, "Ready")["status"] == "True"


def test_a_webhook_whose_secret_variable_is_missing_is_not_ready(
    state: store.StateStore, tenant: store.Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FIBRIC_TEST_HOOK_SECRET", raising=False)
    apply_yaml(state, tenant.id, webhook(secret_env="FIBRIC_TEST_HOOK_SECRET"),
               origin=trust.Origin.INSTALLATION)
    ready = condition(reconciled(state, tenant, "Webhook", "ops-channel"), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "SecretMissing")
    assert "FIBRIC_TEST_HOOK_SECRET" in ready["message"]

    monkeypatch.setenv("FIBRIC_TEST_HOOK_SECRET", "s3cret")
    ready = condition(reconciled(state, tenant, "Webhook", "ops-channel", T1), "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Enabled")


def test_a_tenant_webhook_naming_a_server_variable_is_not_permitted(
    state: store.StateStore, tenant: store.Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row a tenant wrote before the trust boundary (or by hand) never reads the variable."""
    monkeypatch.setenv("FIBRIC_TEST_HOOK_SECRET", "s3cret")
    insert(state, tenant.id, webhook(secret_env="FIBRIC_TEST_HOOK_SECRET"))
    ready = condition(reconciled(state, tenant, "Webhook", "ops-channel"), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NotPermitted")
    assert "s3cret" not in ready["message"]


def test_a_webhook_signing_with_a_missing_tenant_secret_is_not_ready(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    apply_yaml(state, tenant.id, webhook(secret_ref="ops-hook"))
    ready = condition(reconciled(state, tenant, "Webhook", "ops-channel"), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "SecretMissing")
    assert "ops-hook" in ready["message"]
    vault.put(state, secretbox.SecretBox(key=secretbox.new_key()), tenant.id, "ops-hook", "whsec_x")
    ready = condition(reconciled(state, tenant, "Webhook", "ops-channel", T1), "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Enabled")


def test_a_webhook_with_a_generated_secret_is_ready_and_a_disabled_one_is_not(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    apply_yaml(state, tenant.id, webhook(), webhook("paused-hook", enabled="false"))
    ready = condition(reconciled(state, tenant, "Webhook", "ops-channel"), "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Enabled")
    ready = condition(reconciled(state, tenant, "Webhook", "paused-hook"), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Disabled")


def test_reconcile_never_touches_the_spec_or_generation(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    apply_yaml(state, tenant.id, policy(), operator(), connector(), webhook())
    before = {(o.kind, o.name): (o.spec, o.generation, o.labels) for o in state.all_objects()}
    for obj in state.all_objects():
        reconcile.reconcile(state, obj, T0)
    after = {(o.kind, o.name): (o.spec, o.generation, o.labels) for o in state.all_objects()}
    assert after == before
    assert all(o.observed_generation == o.generation for o in state.all_objects())
