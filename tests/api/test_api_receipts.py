"""/v1/receipts: the append-only DuckDB ledger, read newest first within the caller's tenant."""

from __future__ import annotations

import dataclasses
import inspect
import re
import threading
from collections.abc import Callable
from typing import Any

import pytest
from api_support import TestClient, error_of, fields_of, new_receipt

from fibric import store
from fibric.store import receipt_store, sealed


def test_list_has_the_reference_shape(
    client: TestClient, ledger: receipt_store.Ledger, tenant: store.Tenant
) -> None:
    written = ledger.append(new_receipt(tenant))
    listed = client.get("/v1/receipts", params={"operator_id": "op_8f2a1c", "decision": "ALLOW"}).json()
    assert listed["object"] == "list" and listed["has_more"] is False and listed["next_cursor"] is None
    assert listed["data"] == [{
        "id": written.id, "object": "receipt", "operator": "ship-risk", "capability": "orders.hold",
        "entity_key": "order:SO-10884", "decision": "ALLOW", "outcome": "applied",
        "at": written.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }]


def test_retrieve_has_the_whole_record(
    client: TestClient, ledger: receipt_store.Ledger, tenant: store.Tenant
) -> None:
    written = ledger.append(new_receipt(
        tenant, triggered_by_event="ev_3a91c7", plan_id="pl_7c1a", approver="ops@acme.com",
        args={"reason": "will miss ship-by date"}, policy_id="pol_22b9", policy_sha256="ab" * 32,
    ))
    body = client.get(f"/v1/receipts/{written.id}").json()
    assert re.fullmatch(r"rc_[0-9a-f]+", body["id"])
    expected = {
        "id": written.id, "object": "receipt", "reseller_id": "rs_fibric", "tenant_id": tenant.id,
        "operator": "ship-risk", "capability": "orders.hold", "entity_key": "order:SO-10884",
        "triggered_by_event": "ev_3a91c7", "plan_id": "pl_7c1a", "proposed_by": "model",
        "policy": {"decision": "ALLOW", "rule": "orders.hold"},
        "idempotency_key": "ship-risk:SO-10884:hold", "outcome": "applied", "approver": "ops@acme.com",
        "decided_by": None,
        "at": written.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        # additive
        "operator_id": "op_8f2a1c", "args": {"reason": "will miss ship-by date"}, "run_id": None,
        "policy_id": "pol_22b9", "policy_sha256": "ab" * 32, "decision": "ALLOW", "detail": None,
        "prev_hash": receipt_store.GENESIS, "hash": written.hash,
        "request_id": None, "trace_id": None,  # written outside a request (see test_traces.py)
        "decision_input": None,  # appended directly: no policy ran (tests/decisions/)
    }
    assert body == expected


def test_filters(client: TestClient, ledger: receipt_store.Ledger, tenant: store.Tenant) -> None:
    a = ledger.append(new_receipt(tenant))
    b = ledger.append(new_receipt(tenant, decision="BLOCK", outcome="refused", entity_key="order:2"))
    c = ledger.append(new_receipt(tenant, operator_id="op_other", operator="restock", decision="DEDUP",
                                  outcome="deduplicated"))

    def ids(**params: str) -> list[str]:
        response = client.get("/v1/receipts", params=params)
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()["data"]]

    assert ids() == [c.id, b.id, a.id]
    assert ids(operator_id="op_8f2a1c") == [b.id, a.id]
    assert ids(entity_key="order:2") == [b.id]
    assert ids(decision="DEDUP") == [c.id]
    assert ids(operator_id="op_8f2a1c", decision="ALLOW") == [a.id]
    assert ids(operator_id="op_nobody") == []


@pytest.mark.parametrize(("params", "field"), [
    ({"decision": "allow"}, "decision"),
    ({"decision": "MAYBE"}, "decision"),
    ({"operator_id": "op 1"}, "operator_id"),
    ({"entity_key": "a\tb"}, "entity_key"),
    ({"limit": "101"}, "limit"),
    ({"cursor": "cur_x"}, "cursor"),
])
def test_bad_filters_are_400_naming_them(client: TestClient, params: dict[str, str], field: str) -> None:
    assert fields_of(error_of(client.get("/v1/receipts", params=params), 400, "invalid_request")) == [field]


def test_tenants_see_only_their_receipts(
    client: TestClient, ledger: receipt_store.Ledger, tenant: store.Tenant, other_tenant: store.Tenant
) -> None:
    theirs = ledger.append(new_receipt(other_tenant))
    assert client.get("/v1/receipts").json()["data"] == []
    assert client.get("/v1/receipts", params={"operator_id": theirs.operator_id}).json()["data"] == []
    foreign = client.get(f"/v1/receipts/{theirs.id}")
    missing = client.get("/v1/receipts/rc_0000000000000000")
    assert error_of(foreign, 404, "not_found")["message"].replace(theirs.id, "<id>") == \
        error_of(missing, 404, "not_found")["message"].replace("rc_0000000000000000", "<id>")
    # Each tenant's hash chain starts on its own.
    ours = ledger.append(new_receipt(tenant))
    assert ours.prev_hash == receipt_store.GENESIS


def test_a_walk_stays_exact_while_receipts_are_appended(
    client: TestClient, ledger: receipt_store.Ledger, tenant: store.Tenant
) -> None:
    existing = [ledger.append(new_receipt(tenant, idempotency_key=f"k{n}")).id for n in range(40)]
    stop = threading.Event()

    def append_more() -> None:
        n = 0
        while not stop.is_set() and n < 200:
            ledger.append(new_receipt(tenant, idempotency_key=f"late{n}"))
            n += 1

    writer = threading.Thread(target=append_more)
    writer.start()
    seen: list[str] = []
    cursor = None
    try:
        while True:
            body = client.get("/v1/receipts", params={"limit": 6, **({"cursor": cursor} if cursor else {})})
            assert body.status_code == 200, body.text
            seen.extend(r["id"] for r in body.json()["data"])
            if not body.json()["has_more"]:
                break
            cursor = body.json()["next_cursor"]
    finally:
        stop.set()
        writer.join(timeout=30)
    assert len(seen) == len(set(seen))
    assert [r for r in seen if r in set(existing)] == existing[::-1]


def test_each_receipt_chains_to_its_tenants_previous_one(
    ledger: receipt_store.Ledger, tenant: store.Tenant
) -> None:
    first = ledger.append(new_receipt(tenant))
    second = ledger.append(new_receipt(tenant, idempotency_key="k2"))
    assert first.prev_hash == receipt_store.GENESIS
    assert second.prev_hash == first.hash
    assert second.seq > first.seq
    for receipt in (first, second):
        assert receipt_store.chain_hash(dataclasses.asdict(receipt)) == receipt.hash
    # An edit anywhere changes the hash the chain recorded.
    edited = dataclasses.asdict(first) | {"outcome": "failed"}
    assert receipt_store.chain_hash(edited) != second.prev_hash


def test_the_ledger_can_only_append_and_read() -> None:
    public = sorted(n for n, _ in inspect.getmembers(receipt_store.Ledger) if not n.startswith("_"))
    assert public == ["append", "applied", "applied_counts", "for_action", "get", "list_receipts"]
    source = inspect.getsource(receipt_store).upper()
    assert "UPDATE RECEIPTS " not in source and "DELETE FROM" not in source  # only the head row moves


def test_receipts_need_their_scope(make_client: Callable[..., TestClient], tenant: store.Tenant) -> None:
    client = make_client(tenant, frozenset(store.SCOPES) - {"receipts:read"})
    for path in ("/v1/receipts", "/v1/receipts/rc_1"):
        assert "'receipts:read'" in error_of(client.get(path), 403, "insufficient_scope")["message"]


def test_the_sealed_ledger_is_opened_only_when_needed(tmp_path: Any) -> None:
    lake = sealed.SealedLedger(tmp_path / "deep")
    assert not (tmp_path / "deep").exists()
    assert lake.count() == 0
    assert (tmp_path / "deep" / sealed.CATALOG_FILE).exists()
    lake.close()
