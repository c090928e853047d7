"""POST /v1/plans/{id}/approve with the real executor: dispose of each action exactly once.

Real server on loopback, real controller and connector runtime, the example
order system over stdio (its SQLite file counts external effects), the
example ship-risk policy in the embedded Rego engine, receipts of record in
the state store, sealed into the DuckLake ledger.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from executor_support import Fibric, effects, example_actions, running

from fibric import errors, store
from fibric.store import leases, outbox, plan_store

HOLD, NOTIFY = "ship-risk:SO-10884:hold", "ship-risk:SO-10884:notify"


@pytest.fixture
def fibric(state: store.StateStore, tenant: store.Tenant, tmp_path: Path) -> Any:
    with running(state, tenant, tmp_path) as f:
        yield f


def approve(f: Fibric, plan_id: str, body: dict[str, Any] | None = None, **headers: str) -> Any:
    with f.client() as c:
        return c.post(f"/v1/plans/{plan_id}/approve", json=body or {}, headers=headers)


def by_key(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["idempotency_key"]: r for r in results}


def test_approval_runs_each_action_once_and_writes_receipts_and_events(fibric: Fibric) -> None:
    event = fibric.ingest()
    plan = fibric.propose(event_id=event.id)
    before = outbox.last_seq(fibric.state)

    response = approve(fibric, plan.id, {"approver": "ops@acme.com"}, **{"Idempotency-Key": "approve-1"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["status"], body["approver"]) == (plan.id, "executed", "ops@acme.com")
    assert body["executed_at"]
    results = by_key(body["results"])
    assert {k: (r["decision"], r["outcome"]) for k, r in results.items()} == {
        HOLD: ("ALLOW", "applied"), NOTIFY: ("ALERT", "applied")}
    assert results[NOTIFY]["flagged"] is True and "flagged" not in results[HOLD]
    assert effects(fibric.orders_db, HOLD) == 1 and effects(fibric.orders_db, NOTIFY) == 1

    hold = fibric.ledger.get(fibric.tenant.id, results[HOLD]["receipt_id"])
    assert (hold.plan_id, hold.triggered_by_event, hold.approver, hold.operator) == (
        plan.id, event.id, "ops@acme.com", "ship-risk")
    assert hold.policy["rule"] == "orders.hold" and len(hold.policy_sha256 or "") == 64
    assert hold.policy_id and hold.policy_id.startswith("pol_")
    assert hold.detail["structuredContent"]["status"] == "on_hold"
    notify = fibric.ledger.get(fibric.tenant.id, results[NOTIFY]["receipt_id"])
    assert notify.policy["flagged"] is True

    events = outbox.history(fibric.state, after_seq=before)
    assert sorted(e.type for e in events) == sorted(
        ["receipt.created", "action.disposed"] * 2 + ["plan.executed"])
    disposed = {e.payload["idempotency_key"]: e.payload for e in events if e.type == "action.disposed"}
    assert disposed[NOTIFY]["flagged"] is True and disposed[HOLD]["flagged"] is False
    assert disposed[HOLD]["receipt_id"] == hold.id
    created = [e.payload for e in events if e.type == "receipt.created"]
    assert {p["id"] for p in created} == {hold.id, notify.id}
    executed = next(e.payload for e in events if e.type == "plan.executed")
    assert executed["status"] == "executed" and executed["results"] == body["results"]

    replay = approve(fibric, plan.id, {"approver": "ops@acme.com"}, **{"Idempotency-Key": "approve-1"})
    assert replay.status_code == 200 and replay.json() == body
    assert replay.headers["Idempotent-Replayed"] == "true"
    again = approve(fibric, plan.id)
    assert again.status_code == 409 and again.json()["error"]["code"] == "plan_not_approvable"
    assert effects(fibric.orders_db) == 2


def test_an_applied_idempotency_key_is_deduplicated_in_a_later_plan(fibric: Fibric) -> None:
    first = fibric.propose()
    assert approve(fibric, first.id).status_code == 200
    second = fibric.propose()

    body = approve(fibric, second.id).json()

    assert [(r["decision"], r["outcome"]) for r in body["results"]] == [("DEDUP", "deduplicated")] * 2
    assert body["status"] == "executed"
    assert effects(fibric.orders_db) == 2
    receipt = fibric.ledger.get(fibric.tenant.id, body["results"][0]["receipt_id"])
    assert receipt.decision == "DEDUP" and receipt.plan_id == second.id


def test_a_blocked_action_stays_blocked_with_approval(fibric: Fibric) -> None:
    plan = fibric.propose([{"capability": "orders.read", "entity_key": "order:SO-10884",
                            "idempotency_key": "ship-risk:SO-10884:read", "args": {}, "decision": "BLOCK"}])

    body = approve(fibric, plan.id, {"approver": "boss@acme.com"}).json()

    assert body["status"] == "blocked"
    assert body["results"] == [{"idempotency_key": "ship-risk:SO-10884:read", "decision": "BLOCK",
                                "outcome": "refused", "rule": "default-deny",
                                "receipt_id": body["results"][0]["receipt_id"]}]
    receipt = fibric.ledger.get(fibric.tenant.id, body["results"][0]["receipt_id"])
    assert (receipt.outcome, receipt.rule, receipt.approver) == ("refused", "default-deny", "boss@acme.com")


def test_a_hold_is_refused_when_the_order_changed_after_the_plan(fibric: Fibric) -> None:
    plan = fibric.propose(event_id=fibric.ingest().id)
    fibric.ingest(idempotency_key="magento:SO-10884:v8",
                  data={"status": "shipped", "ship_by": "2026-06-15", "carrier_scanned": True})

    results = by_key(approve(fibric, plan.id).json()["results"])

    assert (results[HOLD]["outcome"], results[HOLD]["rule"]) == ("refused", "orders.hold.stale")
    receipt = fibric.ledger.get(fibric.tenant.id, results[HOLD]["receipt_id"])
    assert receipt.policy["reasons"] == [
        "a newer event about order:SO-10884 arrived after the plan was proposed"]
    assert effects(fibric.orders_db, HOLD) == 0
    assert results[NOTIFY]["outcome"] == "applied"  # telling the owner is still allowed


def test_notifications_are_capped_by_counts_from_receipts(fibric: Fibric) -> None:
    outcomes = []
    for n in range(4):
        plan = fibric.propose([example_actions(prefix=f"ship-risk:SO-10884:{n}")[1]])
        outcomes.append(approve(fibric, plan.id).json()["results"][0])
    assert [r["outcome"] for r in outcomes] == ["applied"] * 3 + ["refused"]
    assert outcomes[3]["rule"] == "orders.notify.cap"
    assert effects(fibric.orders_db) == 3


def test_approve_binds_to_the_digest_the_approver_saw(fibric: Fibric) -> None:
    plan = fibric.propose()
    with fibric.client() as c:
        shown = c.get(f"/v1/plans/{plan.id}").json()["digest"]
    assert shown == plan.digest

    wrong = approve(fibric, plan.id, {"digest": "sha256:" + "0" * 64})
    assert wrong.status_code == 409 and wrong.json()["error"]["code"] == "conflict"
    assert plan.digest in wrong.json()["error"]["message"]
    assert plan_store.get(fibric.state, fibric.tenant.id, plan.id).status == "proposed"
    assert effects(fibric.orders_db) == 0

    assert approve(fibric, plan.id, {"digest": shown}).json()["status"] == "executed"


def test_only_actions_runs_the_chosen_subset(fibric: Fibric) -> None:
    plan = fibric.propose()
    body = approve(fibric, plan.id, {"only_actions": [HOLD]}).json()
    assert [(r["idempotency_key"], r["outcome"]) for r in body["results"]] == [
        (HOLD, "applied"), (NOTIFY, "declined")]  # the action left out is on the record, not run
    assert effects(fibric.orders_db, HOLD) == 1 and effects(fibric.orders_db, NOTIFY) == 0
    declined = fibric.ledger.get(fibric.tenant.id, body["results"][1]["receipt_id"])
    assert declined.rule == "declined" and declined.decision == "ALERT"  # the decision the plan showed
    assert "only_actions" in declined.policy["reasons"][0]


def test_a_single_flight_collision_is_409_naming_the_entity(fibric: Fibric) -> None:
    plan = fibric.propose()
    assert leases.acquire(fibric.state, fibric.tenant.id, "order:SO-10884", "exe_elsewhere", ttl=60)

    response = approve(fibric, plan.id, {"approver": "ops"})

    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "conflict" and "order:SO-10884" in error["message"]
    assert plan_store.get(fibric.state, fibric.tenant.id, plan.id).status == "proposed"
    assert effects(fibric.orders_db) == 0 and fibric.ledger.list_receipts(fibric.tenant.id) == []

    leases.release(fibric.state, fibric.tenant.id, ["order:SO-10884"], "exe_elsewhere")
    assert approve(fibric, plan.id).json()["status"] == "executed"


def test_approvals_carry_on_while_the_sealed_ledger_is_unavailable_and_it_catches_up(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path
) -> None:
    catalog = tmp_path / "data" / "ledger.ducklake"
    catalog.mkdir(parents=True)  # the lake's catalog cannot open: sealing fails until it can
    with running(state, tenant, tmp_path) as fibric:
        body = approve(fibric, fibric.propose().id).json()
        assert [r["outcome"] for r in body["results"]] == ["applied", "applied"]
        assert effects(fibric.orders_db) == 2  # the receipts of record are in the state store
        catalog.rmdir()  # the lake comes back: the sealer's next pass seals both, in order
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(errors.FibricError):
                if fibric.system.lake.marks().get(tenant.id) == 2:
                    break
            time.sleep(0.1)
        assert [r[1] for r in fibric.system.lake.rows(tenant.id)] == [1, 2]


def test_the_tool_is_not_called_when_its_intent_cannot_be_written(fibric: Fibric) -> None:
    plan = fibric.propose()
    # From now on every intent write fails, as on a full disk.
    with fibric.state.backend.transaction(write=True) as cur:
        if fibric.state.dialect == "sqlite":
            cur.execute("CREATE TRIGGER no_room BEFORE INSERT ON intents"
                        " BEGIN SELECT RAISE(FAIL, 'disk full'); END")
        else:
            cur.execute("CREATE FUNCTION no_room() RETURNS trigger LANGUAGE plpgsql AS"
                        " $$ BEGIN RAISE EXCEPTION 'disk full'; END $$")
            cur.execute("CREATE TRIGGER no_room BEFORE INSERT ON intents"
                        " FOR EACH ROW EXECUTE FUNCTION no_room()")

    body = approve(fibric, plan.id).json()

    assert [r["outcome"] for r in body["results"]] == ["failed", "failed"]
    assert effects(fibric.orders_db) == 0
    receipt = fibric.ledger.get(fibric.tenant.id, body["results"][0]["receipt_id"])
    assert "intent not written, tool not called" in receipt.detail["error"]
    assert "disk full" in receipt.detail["error"]


def test_receipts_name_the_key_that_approved_apart_from_the_note(fibric: Fibric) -> None:
    key, secret = fibric.state.create_api_key(fibric.tenant.id, frozenset({"plans:approve"}),
                                              name="alice@example.com")
    plan = fibric.propose()

    with httpx.Client(base_url=fibric.url, headers={"Authorization": f"Bearer {secret}"}) as alice:
        body = alice.post(f"/v1/plans/{plan.id}/approve", json={"approver": "on behalf of bob"}).json()

    who = {"key_id": key.id, "key_name": "alice@example.com"}
    # The note is free text; who approved is the key.
    assert (body["approver"], body["decided_by"]) == ("on behalf of bob", who)
    for result in body["results"]:
        receipt = fibric.ledger.get(fibric.tenant.id, result["receipt_id"])
        assert (receipt.approver, receipt.decided_by) == ("on behalf of bob", who)
