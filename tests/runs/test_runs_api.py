"""Events flow to plans for the example ship-risk operator (`rules` model), through the real API.

POST /v1/events wakes the controller's event router; it routes the event to
the subscribed operator, runs it once per entity at a time, and stores the
plan with each action pre-decided by the example Rego policy. Runs are read
back through /v1/runs and the operator's `last_run`.
"""

from __future__ import annotations

from typing import Any

from runs_support import (
    Live,
    all_runs,
    apply_examples,
    apply_yaml,
    event,
    live,
    settle,
    settled,
    wait_for,
)

from fibric import policies, specs, store
from fibric.policies import masking
from fibric.store import outbox, plan_store, receipt_store


def test_an_at_risk_order_event_becomes_a_proposed_plan(
    harness: Live, state: store.StateStore, tenant: store.Tenant
) -> None:
    operator = apply_examples(state, tenant.id)
    policy = state.get_object(tenant.id, "Policy", "ship-risk-guard")
    with harness.client(state, tenant) as client:
        ingested = event(client, "evt-1")
        settle(state)
        listed = client.get("/v1/plans", params={"status": "proposed"}).json()["data"]
        assert len(listed) == 1
        plan = client.get(f"/v1/plans/{listed[0]['id']}").json()
        runs = client.get("/v1/runs").json()["data"]
        op = client.get(f"/v1/operators/{operator.id}").json()
    assert plan["operator_id"] == operator.id
    assert plan["proposed_by"] == "rules"
    assert plan["policy_id"] == policy.id
    assert plan["status"] == "proposed"
    hold, notify = plan["actions"]
    assert (hold["capability"], hold["entity_key"], hold["args"], hold["decision"]) == (
        "orders.hold", "order:SO-10884", {"reason": "will miss ship-by date"}, "ALLOW")
    assert (notify["capability"], notify["args"], notify["decision"]) == (
        "orders.notify", {"to": "owner"}, "ALERT")
    assert hold["idempotency_key"] and hold["idempotency_key"] != notify["idempotency_key"]
    [run] = runs
    assert run["id"].startswith("run_") and run["object"] == "run"
    assert (run["status"], run["trigger"], run["sensed"], run["proposed"], run["applied"]) == (
        "succeeded", "event", 1, 2, 0)
    assert run["event_ids"] == [ingested["id"]] and run["plan_id"] == plan["id"]
    stored = plan_store.get(state, tenant.id, plan["id"])
    assert (stored.run_id, stored.event_id) == (run["id"], ingested["id"])
    assert op["last_run"] == {"run_id": run["id"], "sensed": 1, "proposed": 2, "applied": 0,
                              "at": run["finished_at"], "status": "succeeded", "error": None}
    announced = [e for e in outbox.pending(state) if e.type == "plan.proposed"]
    assert [e.payload["id"] for e in announced] == [plan["id"]]


def test_a_plan_preview_keeps_the_input_each_decision_was_made_on(
    harness: Live, state: store.StateStore, tenant: store.Tenant
) -> None:
    """What an approver and an auditor read: why each action shows the decision it does."""
    apply_examples(state, tenant.id)
    policy = state.get_object(tenant.id, "Policy", "ship-risk-guard")
    apply_yaml(state, tenant.id, specs.to_yaml([specs.build(
        "Policy", policy.name, {**policy.spec, "mask": ["/action/args/reason"]})]))
    with harness.client(state, tenant) as client:
        ingested = event(client, "evt-1")
        settle(state)
        [listed] = client.get("/v1/plans", params={"status": "proposed"}).json()["data"]
        plan = client.get(f"/v1/plans/{listed['id']}").json()

    engine = policies.open_engine("embedded", timeout=5.0)
    try:
        compiled = policies.compile(policy.spec["rego"], query=policy.spec.get("query"))
        for action in plan["actions"]:
            record = action["decision_input"]
            assert action["policy_sha256"] == compiled.sha256
            assert record["event"]["id"] == ingested["id"] and record["plan_id"] is None
            assert record["action"]["capability"] == action["capability"]
            again = policies.evaluate(engine, compiled, record)
            assert (again.decision.value, again.rule) == (action["decision"], action["rule"])
    finally:
        engine.close()
    hold = plan["actions"][0]
    assert hold["args"] == {"reason": "will miss ship-by date"}  # the action itself is not masked
    assert hold["decision_input"]["action"]["args"] == {"reason": masking.MASKED}


def test_an_event_the_rules_do_not_match_runs_and_proposes_nothing(
    harness: Live, state: store.StateStore, tenant: store.Tenant
) -> None:
    apply_examples(state, tenant.id)
    with harness.client(state, tenant) as client:
        event(client, "evt-1", data={"carrier_scanned": True, "status": "open"})
        settle(state)
        assert client.get("/v1/plans").json()["data"] == []
        [run] = client.get("/v1/runs").json()["data"]
    assert (run["status"], run["proposed"], run["plan_id"], run["error"]) == ("succeeded", 0, None, None)


def test_an_event_nobody_subscribes_to_is_stored_and_routed_nowhere(
    harness: Live, state: store.StateStore, tenant: store.Tenant
) -> None:
    apply_examples(state, tenant.id)
    with harness.client(state, tenant) as client:
        ingested = event(client, "evt-1", type="invoice.paid")
        settle(state)
        assert client.get(f"/v1/events/{ingested['id']}").status_code == 200
        assert client.get("/v1/runs").json()["data"] == []
        assert client.get("/v1/plans").json()["data"] == []


def test_subscriptions_are_globs_and_only_active_operators_run(
    harness: Live, state: store.StateStore, tenant: store.Tenant
) -> None:
    apply_examples(state, tenant.id)
    for name, lifecycle in (("every-order", "active"), ("paused-one", "paused"), ("draft-one", "draft")):
        apply_yaml(state, tenant.id, f"""
apiVersion: fibric.io/v1
kind: Operator
metadata: {{name: {name}}}
spec:
  capabilities: [orders.hold]
  policy: ship-risk-guard
  subscribes: ["order.*"]
  lifecycle: {lifecycle}
""")
    with harness.client(state, tenant) as client:
        event(client, "evt-1", type="order.created")
        event(client, "evt-2", type="order.updated", entity="order:SO-2")
        settle(state)
        runs = client.get("/v1/runs").json()["data"]
    ran = sorted(r["operator"] for r in runs)
    assert ran == ["every-order", "every-order", "ship-risk"]  # ship-risk subscribes to order.updated only


def test_a_failed_run_is_visible_and_the_next_event_still_runs(
    harness: Live, state: store.StateStore, tenant: store.Tenant
) -> None:
    apply_examples(state, tenant.id)
    # Valid CEL that fails on an event whose `data.score` is not a number.
    apply_yaml(state, tenant.id, """
apiVersion: fibric.io/v1
kind: Operator
metadata: {name: scorer}
spec:
  capabilities: [orders.hold]
  policy: ship-risk-guard
  subscribes: [order.scored]
  rules:
    - when: "event.data.score > 10"
      actions:
        - capability: orders.hold
          args: {reason: high score}
""")
    operator = state.get_object(tenant.id, "Operator", "scorer")
    with harness.client(state, tenant) as client:
        event(client, "evt-1", type="order.scored", data={"score": "high"})
        settle(state)
        failed = client.get(f"/v1/operators/{operator.id}").json()["last_run"]
        event(client, "evt-2", type="order.scored", data={"score": 11})
        settle(state)
        after = client.get(f"/v1/operators/{operator.id}").json()["last_run"]
        listed_failed = client.get("/v1/runs", params={"status": "failed"}).json()["data"]
        [proposal] = client.get("/v1/plans").json()["data"]
    assert failed["status"] == "failed" and failed["error"] and failed["proposed"] == 0
    assert [r["id"] for r in listed_failed] == [failed["run_id"]]
    assert "rules[0].when" in listed_failed[0]["error"]
    assert (after["status"], after["proposed"], after["error"]) == ("succeeded", 1, None)
    assert after["run_id"] != failed["run_id"]
    # A person learns of the failure without polling: run.failed carries the run as GET shows it.
    announced = [e.payload for e in outbox.history(state) if e.type == "run.failed"]
    assert announced == [listed_failed[0]]
    # And the plan says why it proposes what it does: the rule that matched, on which event.
    plan = plan_store.get(state, tenant.id, proposal["id"])
    assert (plan.operator_name, plan.run_id) == ("scorer", after["run_id"])
    [proposed] = plan.actions
    assert proposed["rationale"].startswith(f"rules[0] matched event {plan.event_ids[0]} (order.scored)")


def test_the_same_proposal_twice_makes_one_plan_until_that_plan_is_decided(
    harness: Live, state: store.StateStore, tenant: store.Tenant
) -> None:
    apply_examples(state, tenant.id)
    with harness.client(state, tenant) as client:
        event(client, "evt-1")
        settle(state)
        event(client, "evt-2")
        settle(state)
        [plan] = client.get("/v1/plans").json()["data"]
        second = client.get("/v1/runs").json()["data"][0]
        plan_store.approve(state, tenant.id, plan["id"], approver="ops@acme")
        event(client, "evt-3")
        settle(state)
        listed = client.get("/v1/plans").json()["data"]
    assert second["plan_id"] == plan["id"] and second["proposed"] == 2  # pointed at the open plan
    assert len(listed) == 2 and listed[1]["id"] == plan["id"]  # approved: the next proposal is a new plan
    first_actions = plan_store.get(state, tenant.id, plan["id"]).actions
    new_actions = plan_store.get(state, tenant.id, listed[0]["id"]).actions
    assert [a["idempotency_key"] for a in new_actions] == [a["idempotency_key"] for a in first_actions]


def test_runs_are_listed_filtered_paged_and_walled_off_per_tenant(
    harness: Live, state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant
) -> None:
    operator = apply_examples(state, tenant.id)
    other = harness.plain_client(state, other_tenant)
    with harness.client(state, tenant) as client:
        for n in range(3):
            event(client, f"evt-{n}", entity=f"order:SO-{n}")
        settle(state)
        page = client.get("/v1/runs", params={"limit": 2}).json()
        rest = client.get("/v1/runs", params={"limit": 2, "cursor": page["next_cursor"]}).json()
        mine = client.get("/v1/runs", params={"operator_id": operator.id}).json()["data"]
        nobody = client.get("/v1/runs", params={"operator_id": "op_nobody"}).json()["data"]
        run_id = page["data"][0]["id"]
        theirs = other.get(f"/v1/runs/{run_id}")
        their_list = other.get("/v1/runs").json()["data"]
        bad_status = client.get("/v1/runs", params={"status": "bogus"})
        garbage = client.get("/v1/runs/%00nope")
        own = client.get(f"/v1/runs/{run_id}")
    assert page["has_more"] is True and len(page["data"]) == 2
    assert rest["has_more"] is False and len(rest["data"]) == 1
    assert len(mine) == 3 and nobody == []
    assert own.status_code == 200 and own.json()["entity_key"].startswith("order:SO-")
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "not_found"
    assert their_list == []
    assert bad_status.status_code == 400 and "status" in bad_status.text
    assert garbage.status_code == 404


def test_reading_runs_needs_the_operators_read_scope(
    harness: Live, state: store.StateStore, tenant: store.Tenant
) -> None:
    _, secret = state.create_api_key(tenant.id, frozenset({"events:write"}))
    with harness.client(state, tenant) as client:
        response = client.get("/v1/runs", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 403, response.text


def _runs_of(state: store.StateStore, tenant: store.Tenant) -> list[dict[str, Any]]:
    return [{"id": r.id, "events": r.event_ids} for r in all_runs(state, tenant.id)]


def test_events_stored_while_no_router_runs_are_routed_when_one_starts(
    harness: Live, state: store.StateStore, tenant: store.Tenant, make_app_without_router: Any
) -> None:
    apply_examples(state, tenant.id)
    with make_app_without_router() as client:  # the API alone: events are stored, nothing routes them
        event(client, "evt-1")
        event(client, "evt-2", entity="order:SO-2")
    assert _runs_of(state, tenant) == []
    with harness.client(state, tenant):  # a process with a router starts: it routes what was left
        wait_for(lambda: len(all_runs(state, tenant.id)) == 2 and all(
            r.status == "succeeded" for r in all_runs(state, tenant.id)), what="two runs")
        settle(state)
    assert len(plan_store.list_plans(state, tenant.id)) == 2


def test_the_preview_decision_counts_recently_applied_actions_like_the_executor(
    harness: Live, state: store.StateStore, tenant: store.Tenant, ledger: receipt_store.Ledger
) -> None:
    """The example policy caps notifications at 3 per order per hour: the 4th is previewed as BLOCK."""
    operator = apply_examples(state, tenant.id)
    for n in range(3):
        ledger.append(receipt_store.NewReceipt(
            reseller_id=tenant.reseller_id, tenant_id=tenant.id, operator_id=operator.id,
            operator="ship-risk",
            capability="orders.notify", entity_key="order:SO-10884", idempotency_key=f"earlier-{n}",
            decision="ALERT", outcome="applied", rule="orders.notify"))
    with harness.client(state, tenant) as client:
        event(client, "evt-1")
        event(client, "evt-2", entity="order:SO-10886")
        settle(state)
        listed = client.get("/v1/plans").json()["data"]
        by_entity = {}
        for summary in listed:
            plan = client.get(f"/v1/plans/{summary['id']}").json()
            by_entity[plan["actions"][0]["entity_key"]] = {a["capability"]: a for a in plan["actions"]}
    capped = by_entity["order:SO-10884"]["orders.notify"]
    assert (capped["decision"], capped["rule"]) == ("BLOCK", "orders.notify.cap")
    assert by_entity["order:SO-10886"]["orders.notify"]["decision"] == "ALERT"


def test_ingest_wakes_the_router_without_waiting_for_its_poll(
    state: store.StateStore, tenant: store.Tenant, ledger: receipt_store.Ledger, engine: policies.Engine
) -> None:
    slow_poll = live(state, ledger, engine, poll_seconds=600)
    apply_examples(state, tenant.id)
    with slow_poll.client(state, tenant) as client:
        wait_for(lambda: settled(state), what="the router's first pass")
        event(client, "evt-1")
        wait_for(lambda: plan_store.list_plans(state, tenant.id), timeout=20,
                 what="a plan well before the poll")
