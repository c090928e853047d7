"""Desired-state objects: tenant-scoped reads, newest-first pages, status kept apart from spec."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from fibric import errors, store

RULES = {"capabilities": ["orders.hold"], "policy": "guard", "model": "rules"}


def insert(
    state: store.StateStore, tenant: store.Tenant, kind: str, name: str, spec: dict[str, Any] | None = None
) -> store.StoredObject:
    with state.tenant_transaction(tenant.id) as tx:
        return tx.insert(kind, name, spec if spec is not None else dict(RULES), {"team": "ops"})


def test_an_object_is_found_by_id_or_name(state: store.StateStore, tenant: store.Tenant) -> None:
    made = insert(state, tenant, "Operator", "ship-risk")

    assert made.id.startswith("op_")
    assert (made.kind, made.name, made.spec, made.labels) == ("Operator", "ship-risk", RULES, {"team": "ops"})
    assert (made.generation, made.status, made.apply_set) == (1, {}, None)
    assert state.get_object(tenant.id, "Operator", made.id) == made
    assert state.get_object(tenant.id, "Operator", "ship-risk") == made


def test_a_connector_id_is_its_name(state: store.StateStore, tenant: store.Tenant) -> None:
    made = insert(state, tenant, "Connector", "magento", {"capabilities": {"orders.hold": "hold"}})
    assert made.id == "cn_magento"
    assert state.get_object(tenant.id, "Connector", "cn_magento") == made


def test_refs_naming_nothing_are_not_found(state: store.StateStore, tenant: store.Tenant) -> None:
    insert(state, tenant, "Operator", "ship-risk")
    for ref in ("ghost", "op_0000000000000000", "", "op_\x00", "ship-risk\x00", "x" * 300):
        with pytest.raises(errors.NotFound):
            state.get_object(tenant.id, "Operator", ref)
        with state.tenant_transaction(tenant.id) as tx:
            assert tx.get("Operator", ref) is None


def test_the_kind_is_part_of_the_address(state: store.StateStore, tenant: store.Tenant) -> None:
    made = insert(state, tenant, "Operator", "ship-risk")
    for ref in (made.id, made.name):
        with pytest.raises(errors.NotFound):
            state.get_object(tenant.id, "Policy", ref)
    assert state.list_objects(tenant.id, "Policy") == []


def test_another_tenants_objects_are_invisible(
    state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant
) -> None:
    theirs = insert(state, other_tenant, "Operator", "ship-risk")
    their_connector = insert(state, other_tenant, "Connector", "magento", {"capabilities": {}})

    for ref in (theirs.id, theirs.name):
        with pytest.raises(errors.NotFound):
            state.get_object(tenant.id, "Operator", ref)
    with pytest.raises(errors.NotFound):
        state.get_object(tenant.id, "Connector", their_connector.id)
    assert state.list_objects(tenant.id, "Operator") == []
    with state.tenant_transaction(tenant.id) as tx:
        assert tx.list() == []
        assert tx.get("Operator", theirs.id) is None

    # The same names are free in this tenant and stay separate objects.
    mine = insert(state, tenant, "Operator", "ship-risk")
    my_connector = insert(state, tenant, "Connector", "magento", {"capabilities": {}})
    assert mine.id != theirs.id
    assert state.get_object(tenant.id, "Operator", "ship-risk") == mine
    assert state.get_object(other_tenant.id, "Operator", "ship-risk") == theirs
    assert state.get_object(tenant.id, "Connector", "cn_magento") == my_connector
    assert state.get_object(other_tenant.id, "Connector", "cn_magento") == their_connector
    assert {o.tenant_id for o in state.all_objects()} == {tenant.id, other_tenant.id}


def test_lists_are_newest_first_and_pages_continue_before_a_seq(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    names = [f"op-{n}" for n in range(7)]
    for name in names:
        insert(state, tenant, "Operator", name)
    insert(state, tenant, "Policy", "guard", {"rego": "package guard"})

    listed = state.list_objects(tenant.id, "Operator")
    assert [o.name for o in listed] == names[::-1]
    first = state.list_objects(tenant.id, "Operator", limit=3)
    second = state.list_objects(tenant.id, "Operator", limit=3, before_seq=first[-1].seq)
    last = state.list_objects(tenant.id, "Operator", limit=3, before_seq=second[-1].seq)
    assert [o.name for o in first + second + last] == names[::-1]
    assert state.list_objects(tenant.id, "Operator", before_seq=last[-1].seq) == []


def test_a_before_seq_out_of_range_is_just_past_either_end(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    # Cursors come from clients: a huge or negative seq must not overflow a 64-bit column.
    made = [insert(state, tenant, "Operator", f"op-{n}") for n in range(3)]
    for before_seq in (2**63 - 1, 2**63, 2**64, 10**30):
        listed = state.list_objects(tenant.id, "Operator", limit=2, before_seq=before_seq)
        assert [o.id for o in listed] == [made[2].id, made[1].id]
    for before_seq in (0, -1, -(2**64)):
        assert state.list_objects(tenant.id, "Operator", before_seq=before_seq) == []


def walk(state: store.StateStore, tenant: store.Tenant, page: int) -> list[store.StoredObject]:
    """Every page of the tenant's operators, as a client following next_cursor reads them."""
    seen: list[store.StoredObject] = []
    before: int | None = None
    while True:
        rows = state.list_objects(tenant.id, "Operator", limit=page, before_seq=before)
        seen.extend(rows)
        if len(rows) < page:
            return seen
        before = rows[-1].seq


def test_paging_while_others_insert_never_repeats_or_skips(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    for n in range(20):
        insert(state, tenant, "Operator", f"early-{n}")
    writers, per_writer = 4, 50
    started = threading.Barrier(writers + 1)

    def write(w: int) -> None:
        started.wait(timeout=10)
        for n in range(per_writer):
            insert(state, tenant, "Operator", f"w{w}-{n}")

    walks = 0
    with ThreadPoolExecutor(writers) as pool:
        futures = [pool.submit(write, w) for w in range(writers)]
        started.wait(timeout=10)
        while walks < 3 or not all(f.done() for f in futures):
            existing = {o.id for o in state.list_objects(tenant.id, "Operator")}
            walked = walk(state, tenant, page=7)
            ids = [o.id for o in walked]
            seqs = [o.seq for o in walked]
            assert len(ids) == len(set(ids)), "an object was listed twice"
            assert seqs == sorted(seqs, reverse=True), "pages are not newest first"
            assert existing <= set(ids), "an object that existed before the walk was skipped"
            walks += 1
        for f in futures:
            f.result(timeout=30)

    final = walk(state, tenant, page=7)
    assert len(final) == len({o.id for o in final}) == 20 + writers * per_writer


def test_set_status_never_touches_spec_labels_or_generation(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    made = insert(state, tenant, "Operator", "ship-risk")
    status = {
        "observed_generation": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Scheduled", "message": "",
                        "last_transition_time": "2025-01-01T00:00:00Z"}],
    }

    assert state.set_status(made, status) is True

    after = state.get_object(tenant.id, "Operator", made.id)
    assert after.status == status
    assert after.observed_generation == 1
    assert (after.spec, after.labels, after.generation) == (made.spec, made.labels, made.generation)
    assert (after.created_at, after.updated_at, after.seq) == (made.created_at, made.updated_at, made.seq)

    # A status written from a stale copy still leaves the newer spec alone.
    with state.tenant_transaction(tenant.id) as tx:
        newer = tx.update(after, {**RULES, "capabilities": ["orders.notify"]}, {"team": "ops"})
    state.set_status(made, {"observed_generation": 1})
    latest = state.get_object(tenant.id, "Operator", made.id)
    assert (latest.spec, latest.generation) == (newer.spec, 2)
    assert latest.status == {"observed_generation": 1}


def test_set_status_on_a_deleted_object_reports_it(state: store.StateStore, tenant: store.Tenant) -> None:
    made = insert(state, tenant, "Operator", "ship-risk")
    with state.tenant_transaction(tenant.id) as tx:
        tx.delete(made)
    assert state.set_status(made, {"observed_generation": 1}) is False
    assert state.all_objects() == []


def test_update_moves_the_generation_only_for_a_spec_change(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    made = insert(state, tenant, "Operator", "ship-risk")
    with state.tenant_transaction(tenant.id) as tx:
        relabelled = tx.update(made, dict(RULES), {"team": "sre"})
        changed = tx.update(relabelled, {**RULES, "model": "gpt"}, {"team": "sre"})
    assert (relabelled.generation, relabelled.labels) == (1, {"team": "sre"})
    assert (changed.generation, changed.spec["model"]) == (2, "gpt")
    assert changed.updated_at >= made.updated_at
    assert (changed.id, changed.seq, changed.created_at) == (made.id, made.seq, made.created_at)


def test_a_failed_transaction_writes_nothing(state: store.StateStore, tenant: store.Tenant) -> None:
    kept = insert(state, tenant, "Operator", "kept")

    with pytest.raises(RuntimeError), state.tenant_transaction(tenant.id) as tx:
        tx.insert("Policy", "guard", {"rego": "package guard"}, {})
        tx.update(kept, {**RULES, "model": "gpt"}, {})
        tx.delete(kept)
        raise RuntimeError("boom")

    assert state.all_objects() == [kept]


def test_a_transaction_for_an_unknown_tenant_is_not_found(state: store.StateStore) -> None:
    with pytest.raises(errors.NotFound), state.tenant_transaction("t_0000000000000000"):
        pass
