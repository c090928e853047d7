"""Tool pins in the state store: first sightings never overwrite, acknowledgements do."""

from __future__ import annotations

import pytest
from store_support import Raw

from fibric import store
from fibric.store import pin_store


@pytest.fixture
def pins(state: store.StateStore) -> pin_store.SQLPinStore:
    return pin_store.SQLPinStore(state)


def test_record_new_pins_first_sighting_only(pins: pin_store.SQLPinStore, tenant: store.Tenant) -> None:
    assert pins.load(tenant.id, "magento") == {}
    pins.record_new(tenant.id, "magento", {"orders.read": "aa", "orders.hold": "bb"})
    pins.record_new(tenant.id, "magento", {"orders.read": "poisoned", "orders.notify": "cc"})
    assert pins.load(tenant.id, "magento") == {
        "orders.read": "aa", "orders.hold": "bb", "orders.notify": "cc"}


def test_acknowledge_overwrites_only_named_tools(pins: pin_store.SQLPinStore, tenant: store.Tenant) -> None:
    pins.record_new(tenant.id, "magento", {"orders.read": "aa", "orders.hold": "bb"})
    pins.acknowledge(tenant.id, "magento", {"orders.read": "a2", "orders.new": "dd"})
    assert pins.load(tenant.id, "magento") == {"orders.read": "a2", "orders.hold": "bb", "orders.new": "dd"}


def test_pins_are_per_tenant_and_connector(
    pins: pin_store.SQLPinStore, tenant: store.Tenant, other_tenant: store.Tenant
) -> None:
    pins.record_new(tenant.id, "magento", {"orders.read": "aa"})
    pins.record_new(tenant.id, "shopify", {"orders.read": "ss"})
    pins.record_new(other_tenant.id, "magento", {"orders.read": "zz"})
    pins.forget(tenant.id, "magento")
    assert pins.load(tenant.id, "magento") == {}
    assert pins.load(tenant.id, "shopify") == {"orders.read": "ss"}
    assert pins.load(other_tenant.id, "magento") == {"orders.read": "zz"}


def test_pins_survive_reopening(store_location: str, tenant: store.Tenant, state: store.StateStore) -> None:
    pin_store.SQLPinStore(state).record_new(tenant.id, "magento", {"orders.read": "aa"})
    reopened = store.open_store(store_location)
    try:
        assert pin_store.SQLPinStore(reopened).load(tenant.id, "magento") == {"orders.read": "aa"}
    finally:
        reopened.close()


def test_rows_carry_an_rfc3339_pinned_at(pins: pin_store.SQLPinStore, tenant: store.Tenant, raw: Raw) -> None:
    pins.record_new(tenant.id, "magento", {"orders.read": "aa"})
    rows = raw("SELECT connector, tool, sha256, pinned_at FROM connector_tool_pins WHERE tenant_id = ?",
               (tenant.id,))
    assert len(rows) == 1
    connector, tool, digest, pinned_at = rows[0]
    assert (connector, tool, digest) == ("magento", "orders.read", "aa")
    assert pinned_at.endswith("Z") and "T" in pinned_at
