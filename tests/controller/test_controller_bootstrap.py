"""First start: an empty store gets tenant "default" and exactly one all-scopes key, once."""

from __future__ import annotations

import threading

from fibric import store
from fibric.controller import bootstrap


def test_an_empty_store_gets_a_default_tenant_and_one_working_key(state: store.StateStore) -> None:
    created = bootstrap.bootstrap(state, "rs_fibric")
    assert created is not None
    tenant, secret = created
    assert (tenant.name, tenant.reseller_id) == ("default", "rs_fibric")
    principal = state.authenticate(secret)
    assert principal.tenant_id == tenant.id
    assert principal.scopes == frozenset(store.SCOPES)
    assert len(state.list_api_keys()) == 1

    assert bootstrap.bootstrap(state, "rs_fibric") is None  # the secret is never shown again
    assert [t.name for t in state.list_tenants()] == ["default"]
    assert len(state.list_api_keys()) == 1


def test_a_store_with_tenants_is_left_alone(state: store.StateStore, tenant: store.Tenant) -> None:
    assert bootstrap.bootstrap(state, "rs_fibric") is None
    assert [t.name for t in state.list_tenants()] == ["acme"]
    assert state.list_api_keys() == []


def test_two_processes_starting_at_once_bootstrap_once(store_location: str) -> None:
    stores = [store.open_store(store_location) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    results: list[object] = [None] * len(stores)

    def start(n: int) -> None:
        barrier.wait(5)
        results[n] = bootstrap.bootstrap(stores[n], "rs_fibric")

    threads = [threading.Thread(target=start, args=(n,)) for n in range(len(stores))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sum(r is not None for r in results) == 1
        assert [t.name for t in stores[0].list_tenants()] == ["default"]
        assert len(stores[0].list_api_keys()) == 1
    finally:
        for s in stores:
            s.close()
