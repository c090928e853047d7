"""Deciding on a plan without running it: reject, expiry, and the receipts every declined action gets.

A person's "no" (or nobody's answer in time) is as much on the record as a
"yes": each action gets a `declined` receipt in the transaction that closes
the plan, carrying the key that decided and why.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from api_support import TestClient, action, apply, error_of, fields_of, operator_doc, policy_doc

from fibric import store
from fibric.controller import declines
from fibric.store import outbox, plan_store, receipt_store

ACTIONS = [
    action("orders.hold", "ship-risk:SO-10884:hold", "ALLOW", reason="will miss ship-by date"),
    action("orders.notify", "ship-risk:SO-10884:notify", "ALERT", to="owner"),
]


@pytest.fixture
def operator(client: TestClient) -> str:
    apply(client, [policy_doc("guard"), operator_doc("ship-risk", "guard")])
    found: str = client.get("/v1/operators/ship-risk").json()["id"]
    return found


def propose(state: store.StateStore, tenant: store.Tenant, operator: str, *,
            ttl: timedelta | None = None) -> plan_store.Plan:
    return plan_store.propose(state, tenant.id, operator_id=operator, actions=ACTIONS, policy_id="pol_22b9",
                              operator_name="ship-risk", run_id="run_0123456789abcdef",
                              event_ids=["ev_1", "ev_2"], ttl=ttl)


def events_of(state: store.StateStore, type_: str) -> list[dict[str, Any]]:
    return [e.payload for e in outbox.history(state) if e.type == type_]


@pytest.fixture
def alice(app: Any, state: store.StateStore, tenant: store.Tenant) -> tuple[TestClient, str]:
    """A key named alice with the approver's scopes only."""
    key, secret = state.create_api_key(tenant.id, frozenset({"plans:read", "plans:approve"}),
                                       name="alice@example.com")
    return TestClient(app, headers={"Authorization": f"Bearer {secret}"}), key.id


def test_a_plan_shows_its_run_events_operator_and_expiry(
    client: TestClient, state: store.StateStore, tenant: store.Tenant, operator: str
) -> None:
    plan = propose(state, tenant, operator, ttl=timedelta(hours=1))
    shown = client.get(f"/v1/plans/{plan.id}").json()
    assert (shown["operator"], shown["run_id"], shown["event_ids"]) == (
        "ship-risk", "run_0123456789abcdef", ["ev_1", "ev_2"])
    assert shown["expires_at"].endswith("Z") and shown["decided_by"] is None and shown["reason"] is None
    [summary] = client.get("/v1/plans").json()["data"]
    assert summary["operator"] == "ship-risk" and summary["expires_at"] == shown["expires_at"]


def test_reject_declines_every_action_with_the_key_and_reason_on_each_receipt(
    alice: tuple[TestClient, str], state: store.StateStore, tenant: store.Tenant, operator: str,
    ledger: receipt_store.StoreLedger,
) -> None:
    approver, key_id = alice
    plan = propose(state, tenant, operator)

    response = approver.post(f"/v1/plans/{plan.id}/reject",
                             json={"reason": "customer already called", "digest": plan.digest})

    assert response.status_code == 200, response.text
    body = response.json()
    who = {"key_id": key_id, "key_name": "alice@example.com"}
    assert (body["status"], body["reason"], body["decided_by"]) == (
        "rejected", "customer already called", who)
    assert [(r["idempotency_key"], r["outcome"], r["decision"]) for r in body["results"]] == [
        ("ship-risk:SO-10884:hold", "declined", "ALLOW"), ("ship-risk:SO-10884:notify", "declined", "ALERT")]
    assert not any(r.get("flagged") for r in body["results"])  # nothing ran: nobody need look
    for result in body["results"]:
        receipt = ledger.get(tenant.id, result["receipt_id"])
        assert (receipt.outcome, receipt.rule, receipt.decided_by, receipt.plan_id) == (
            "declined", "declined", who, plan.id)
        assert "customer already called" in receipt.policy["reasons"][0]
    # Announced in the same transaction: the plan, and each receipt.
    [announced] = events_of(state, "plan.rejected")
    assert announced["id"] == plan.id and announced["status"] == "rejected"
    assert len(events_of(state, "receipt.created")) == 2


def test_a_decided_plan_cannot_be_rejected_or_approved_again(
    client: TestClient, state: store.StateStore, tenant: store.Tenant, operator: str,
    ledger: receipt_store.StoreLedger,
) -> None:
    plan = propose(state, tenant, operator)
    assert client.post(f"/v1/plans/{plan.id}/reject", json={"reason": "no"}).status_code == 200

    again = error_of(client.post(f"/v1/plans/{plan.id}/reject", json={"reason": "no"}), 409,
                     "plan_not_approvable")
    assert "rejected" in again["message"]
    error_of(client.post(f"/v1/plans/{plan.id}/approve", json={}), 409, "plan_not_approvable")
    assert len(ledger.list_receipts(tenant.id)) == 2  # one declined receipt per action, once


def test_reject_needs_a_reason_and_the_digest_shown_and_writes_nothing_otherwise(
    client: TestClient, state: store.StateStore, tenant: store.Tenant, operator: str,
    ledger: receipt_store.StoreLedger,
) -> None:
    plan = propose(state, tenant, operator)
    assert fields_of(error_of(client.post(f"/v1/plans/{plan.id}/reject", json={}),
                              400, "invalid_request")) == ["reason"]
    assert fields_of(error_of(client.post(f"/v1/plans/{plan.id}/reject", json={"reason": ""}),
                              400, "invalid_request")) == ["reason"]
    stale = error_of(client.post(f"/v1/plans/{plan.id}/reject",
                                 json={"reason": "no", "digest": "sha256:" + "0" * 64}), 409, "conflict")
    assert plan.digest in stale["message"]
    assert plan_store.get(state, tenant.id, plan.id).status == "proposed"
    assert ledger.list_receipts(tenant.id) == []


def test_rejecting_takes_the_approve_scope(
    make_client: Callable[..., TestClient], state: store.StateStore, tenant: store.Tenant, operator: str,
) -> None:
    plan = propose(state, tenant, operator)
    reader = make_client(tenant, frozenset({"plans:read"}))
    error_of(reader.post(f"/v1/plans/{plan.id}/reject", json={"reason": "no"}), 403, "insufficient_scope")
    assert plan_store.get(state, tenant.id, plan.id).status == "proposed"


@pytest.mark.parametrize("verb", ["approve", "reject"])
def test_another_tenants_plan_reads_as_not_found(
    client: TestClient, other_client: TestClient, state: store.StateStore, other_tenant: store.Tenant,
    verb: str,
) -> None:
    apply(other_client, [policy_doc("guard"), operator_doc("ship-risk", "guard")])
    theirs = propose(state, other_tenant, other_client.get("/v1/operators/ship-risk").json()["id"])
    body = {"reason": "no"} if verb == "reject" else {}

    foreign = client.post(f"/v1/plans/{theirs.id}/{verb}", json=body)
    missing = client.post(f"/v1/plans/pl_0000000000000000/{verb}", json=body)

    assert error_of(foreign, 404, "not_found")["message"].replace(theirs.id, "<id>") == \
        error_of(missing, 404, "not_found")["message"].replace("pl_0000000000000000", "<id>")
    assert plan_store.get(state, other_tenant.id, theirs.id).status == "proposed"


def test_an_expired_plan_is_refused_naming_why_and_its_actions_are_declined(
    client: TestClient, state: store.StateStore, tenant: store.Tenant, operator: str,
    ledger: receipt_store.StoreLedger,
) -> None:
    plan = propose(state, tenant, operator, ttl=timedelta(microseconds=1))

    for verb, body in (("approve", {}), ("reject", {"reason": "too late"})):
        error = error_of(client.post(f"/v1/plans/{plan.id}/{verb}", json=body), 409, "plan_not_approvable")
        assert "expired at" in error["message"], error

    shown = client.get(f"/v1/plans/{plan.id}").json()
    assert shown["status"] == "expired" and shown["decided_by"] is None and "before" in shown["reason"]
    declined = ledger.list_receipts(tenant.id)
    assert sorted(r.outcome for r in declined) == ["declined", "declined"]
    assert all(r.decided_by is None and "expired" in r.policy["reasons"][0] for r in declined)
    assert [p["id"] for p in events_of(state, "plan.expired")] == [plan.id]
    listed = client.get("/v1/plans", params={"status": "expired"}).json()["data"]
    assert [p["id"] for p in listed] == [plan.id]


def test_the_expiry_pass_closes_plans_past_their_time_and_only_those(
    state: store.StateStore, tenant: store.Tenant, operator: str, ledger: receipt_store.StoreLedger,
) -> None:
    late = propose(state, tenant, operator, ttl=timedelta(microseconds=1))
    waiting = propose(state, tenant, operator, ttl=timedelta(hours=1))
    forever = propose(state, tenant, operator)

    assert declines.expire_due(state) == 1
    assert declines.expire_due(state) == 0  # closed once

    assert [plan_store.get(state, tenant.id, p.id).status for p in (late, waiting, forever)] == [
        "expired", "proposed", "proposed"]
    assert {r.plan_id for r in ledger.list_receipts(tenant.id)} == {late.id}


def test_a_racing_rejection_and_expiry_close_the_plan_once(
    state: store.StateStore, tenant: store.Tenant, operator: str, ledger: receipt_store.StoreLedger,
) -> None:
    plan = propose(state, tenant, operator, ttl=timedelta(hours=1))
    rejected = declines.reject(state, tenant.id, plan.id, reason="no",
                               by={"key_id": "key_1", "key_name": None})
    assert declines.expire(state, plan) is None  # the rejection won; the expiry writes nothing
    assert rejected.status == "rejected"
    assert len(ledger.list_receipts(tenant.id)) == 2
