"""Tenants: the unit of isolation, and the ids every row is stamped with."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from store_support import Raw

from fibric import errors, store


def test_a_tenant_is_found_by_name_or_id(state: store.StateStore) -> None:
    created = state.create_tenant("acme", "rs_fibric")

    assert created.id.startswith("t_")
    assert (created.name, created.reseller_id) == ("acme", "rs_fibric")
    assert state.get_tenant("acme") == created
    assert state.get_tenant(created.id) == created
    assert state.list_tenants() == [created]


def test_an_unknown_tenant_is_not_found(state: store.StateStore, tenant: store.Tenant) -> None:
    for ref in ("nobody", "t_0000000000000000", ""):
        with pytest.raises(errors.NotFound):
            state.get_tenant(ref)


def test_a_duplicate_name_is_a_conflict(state: store.StateStore, raw: Raw) -> None:
    state.create_tenant("acme", "rs_fibric")
    with pytest.raises(errors.Conflict, match="acme"):
        state.create_tenant("acme", "rs_other")
    assert raw("SELECT name, reseller_id FROM tenants") == [("acme", "rs_fibric")]


def test_racing_creators_of_one_name_get_one_tenant(state: store.StateStore, raw: Raw) -> None:
    racers = 6
    barrier = threading.Barrier(racers)

    def create() -> str:
        barrier.wait(timeout=10)
        try:
            state.create_tenant("acme", "rs_fibric")
        except errors.Conflict:
            return "conflict"
        return "created"

    with ThreadPoolExecutor(racers) as pool:
        outcomes = sorted(f.result(timeout=30) for f in [pool.submit(create) for _ in range(racers)])

    assert outcomes == ["conflict"] * (racers - 1) + ["created"]
    assert raw("SELECT COUNT(*) FROM tenants") == [(1,)]


def test_a_name_that_is_not_a_slug_is_invalid_naming_the_field(state: store.StateStore, raw: Raw) -> None:
    for name in ("Acme", "-acme", "acme-", "ac_me", "ac me", "", "a" * 64, "acme\x00", "acme\n"):
        with pytest.raises(errors.SpecInvalid) as caught:
            state.create_tenant(name, "rs_fibric")
        assert [p.path for p in caught.value.problems] == ["name"], name
    assert raw("SELECT COUNT(*) FROM tenants") == [(0,)]
    assert state.create_tenant("a" * 63, "rs_fibric").name == "a" * 63


def test_every_row_carries_its_reseller_and_tenant(state: store.StateStore, raw: Raw) -> None:
    acme = state.create_tenant("acme", "rs_one")
    globex = state.create_tenant("globex", "rs_two")
    for tenant in (acme, globex):
        state.create_api_key(tenant.id, frozenset({"operators:read"}))
        with state.tenant_transaction(tenant.id) as tx:
            tx.insert("Policy", "guard", {"rego": "package guard"}, {})
            tx.insert("Connector", "magento", {"capabilities": {"orders.hold": "hold"}}, {})
    expected = {(acme.id, "rs_one"), (globex.id, "rs_two")}

    objects = raw("SELECT tenant_id, reseller_id FROM objects")
    keys = raw("SELECT tenant_id, reseller_id FROM api_keys")

    assert len(objects) == 4 and set(objects) == expected
    assert len(keys) == 2 and set(keys) == expected
    # What the store hands back says the same.
    for tenant in (acme, globex):
        for kind in ("Policy", "Connector"):
            [obj] = state.list_objects(tenant.id, kind)
            assert (obj.tenant_id, obj.reseller_id) == (tenant.id, tenant.reseller_id)
