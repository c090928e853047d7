"""`fibric plans` and the typed plan client, against a real API server over a real store (both backends).

Plans are proposed straight into the store, as an operator's run would store
them, so no model runs. list, show and reject need only the API; approve
needs an executor, so its tests run the whole product (executor_support:
the real controller, the example order system over MCP, the example policy).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cli_support import run

from fibric import client, plantypes, store
from fibric.store import plan_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "executor"))
from executor_support import Fibric, effects, example_actions, running

Env = dict[str, str | None]
HOLD, NOTIFY = "ship-risk:SO-10884:hold", "ship-risk:SO-10884:notify"


@pytest.fixture
def operator_id(repo: Path, api_env: Env, state: store.StateStore, tenant: store.Tenant) -> str:
    """The ship-risk operator of the small test repo, applied through the CLI."""
    assert run(["apply", "-f", str(repo)], api_env).exit_code == 0
    return state.get_object(tenant.id, "Operator", "ship-risk").id


def propose(state: store.StateStore, tenant: store.Tenant, operator_id: str, **extra: Any) -> plan_store.Plan:
    actions = [{**action, "rule": "orders.hold" if action["decision"] == "ALLOW" else "orders.notify",
                "rationale": f"rule 1 matched event ev_1: {action['capability']}"}
               for action in example_actions()]
    return plan_store.propose(state, tenant.id, operator_id=operator_id, actions=actions, policy_id=None,
                              proposed_by="rules", operator_name="ship-risk", **extra)


def ok(args: list[str], env: Env) -> str:
    result = run(args, env)
    assert result.exit_code == 0, result.output
    return result.stdout


def columns(table: str) -> list[list[str]]:
    """A table's cells but the times, which move on between two commands."""
    return [line.split()[:4] for line in table.splitlines()]


def test_list_newest_first_with_filters_and_as_get_plans(
    api_env: Env, state: store.StateStore, tenant: store.Tenant, operator_id: str
) -> None:
    older = propose(state, tenant, operator_id, ttl=timedelta(hours=1))
    newer = propose(state, tenant, operator_id)

    listed = ok(["plans", "list"], api_env)

    header, *rows = listed.splitlines()
    assert header.split() == ["ID", "OPERATOR", "STATUS", "ACTIONS", "PROPOSED", "EXPIRES"]
    assert [row.split()[:4] for row in rows] == [[newer.id, "ship-risk", "proposed", "2"],
                                                 [older.id, "ship-risk", "proposed", "2"]]
    assert rows[0].split()[4:] == ["0s", "ago", "-"]
    assert rows[1].split()[6:8] in (["in", "59m"], ["in", "60m"])

    as_json = json.loads(ok(["plans", "list", "-o", "json"], api_env))
    assert [p["id"] for p in as_json] == [newer.id, older.id]
    assert as_json[1]["operator"] == "ship-risk" and as_json[1]["expires_at"].endswith("Z")
    assert columns(ok(["get", "plans"], api_env)) == columns(listed)
    assert json.loads(ok(["get", "plan", "-o", "json"], api_env)) == as_json

    by_name = ok(["plans", "list", "--operator", "ship-risk", "--status", "proposed"], api_env)
    assert columns(by_name) == columns(listed)
    assert columns(ok(["plans", "list", "--operator", operator_id], api_env)) == columns(listed)
    none = run(["plans", "list", "--status", "executed"], api_env)
    assert (none.exit_code, none.stdout, none.stderr) == (0, "", "No plans found.\n")
    unknown = run(["plans", "list", "--operator", "nope"], api_env)
    assert unknown.exit_code == 1 and "nope" in unknown.stderr and "404 not_found" in unknown.stderr
    bad_status = run(["plans", "list", "--status", "done"], api_env)
    assert bad_status.exit_code == 2 and "'done' is not one of" in bad_status.stderr

    as_yaml = run(["get", "plans", "-o", "yaml"], api_env)
    assert as_yaml.exit_code == 2 and "plans are not spec documents" in as_yaml.stderr
    gadgets = run(["get", "gadgets"], api_env)
    assert gadgets.exit_code == 2 and "webhooks, plans" in gadgets.stderr


def test_show_renders_the_plan_and_what_to_do_next(
    api_env: Env, state: store.StateStore, tenant: store.Tenant, operator_id: str
) -> None:
    plan = propose(state, tenant, operator_id, event_ids=["ev_1", "ev_2"], ttl=timedelta(hours=1))

    shown = ok(["plans", "show", plan.id], api_env)

    assert shown.startswith(f"Plan {plan.id}   PROPOSED\n")
    assert f"  operator   ship-risk ({operator_id})\n" in shown
    assert "  events     ev_1, ev_2\n" in shown and "  run        -\n" in shown
    assert f"  digest     {plan.digest}\n" in shown
    assert "by rules\n" in shown
    expires = next(line for line in shown.splitlines() if line.startswith("  expires"))
    assert expires.endswith(("(in 59m)", "(in 60m)"))
    assert "Stale" not in shown and "decided" not in shown
    assert "  1. orders.hold on order:SO-10884\n" in shown
    assert f"     idempotency key  {HOLD}\n" in shown
    assert '     args             {"reason":"will miss ship-by date"}\n' in shown
    assert "     decision         ALLOW, rule orders.hold\n" in shown
    assert "     decision         ALERT, rule orders.notify\n" in shown
    assert "     rationale        rule 1 matched event ev_1: orders.notify\n" in shown
    assert "result" not in shown
    assert f"Decide:  fibric plans approve {plan.id}" in shown
    assert ok(["get", "plans", plan.id], api_env).splitlines()[:3] == shown.splitlines()[:3]

    as_json = json.loads(ok(["plans", "show", plan.id, "-o", "json"], api_env))
    with client.Client(api_env["FIBRIC_URL"] or "", api_env["FIBRIC_KEY"] or "") as api:
        assert as_json == api.get_plan(plan.id)
    assert as_json["digest"] == plan.digest

    missing = run(["plans", "show", "pl_missing"], api_env)
    assert missing.exit_code == 1
    assert missing.stderr.startswith("Error: No such plan: 'pl_missing' [404 not_found] (request req_")
    assert "Traceback" not in missing.output


def test_reject_declines_every_action_and_show_says_it_is_stale(
    api_env: Env, state: store.StateStore, tenant: store.Tenant, operator_id: str
) -> None:
    plan = propose(state, tenant, operator_id)
    key, secret = state.create_api_key(tenant.id, frozenset({"plans:read", "plans:approve"}), name="alice")
    alice = {**api_env, "FIBRIC_KEY": secret}  # an approver's key: plans only
    assert columns(ok(["plans", "list", "--operator", operator_id], alice))[1][0] == plan.id

    rejected = run(["plans", "reject", plan.id, "--reason", "not during the sale"], alice)

    assert rejected.exit_code == 0, rejected.output
    first, header, *rows = rejected.stdout.splitlines()
    assert first == f"plan {plan.id} rejected: not during the sale"
    assert header.split() == ["ACTION", "CAPABILITY", "DECISION", "OUTCOME", "RECEIPT", "NOTE"]
    assert [row.split()[:2] + row.split()[3:4] for row in rows] == [
        [HOLD, "orders.hold", "declined"], [NOTIFY, "orders.notify", "declined"]]
    assert all(row.split()[4].startswith("rc_") for row in rows)

    shown = ok(["plans", "show", plan.id], alice)
    assert shown.startswith(f"Plan {plan.id}   REJECTED\n")
    assert "! Stale: this plan is rejected, no longer proposed; it cannot be approved or rejected." in shown
    assert f"  decided    rejected by alice ({key.id}) at " in shown
    assert "  reason     not during the sale\n" in shown
    assert "     result           declined (" in shown and "Decide:" not in shown

    again = run(["plans", "reject", plan.id, "--reason", "twice"], alice)
    assert again.exit_code == 1 and "[409 plan_not_approvable]" in again.stderr
    approve = run(["plans", "approve", plan.id], alice)
    assert approve.exit_code == 1
    assert f"Plan {plan.id} is rejected and cannot be approved. [409 plan_not_approvable]" in approve.stderr
    no_reason = run(["plans", "reject", plan.id], alice)
    assert no_reason.exit_code == 2 and "Missing option '--reason'" in no_reason.stderr
    too_long = run(["plans", "reject", propose(state, tenant, operator_id).id, "--reason", "x" * 1001], alice)
    assert too_long.exit_code == 2 and "[400 invalid_request]" in too_long.stderr


def test_an_expired_plan_is_shown_stale_and_approving_it_is_refused(
    api_env: Env, state: store.StateStore, tenant: store.Tenant, operator_id: str
) -> None:
    plan = propose(state, tenant, operator_id, ttl=timedelta(minutes=-3))

    listed = ok(["plans", "list"], api_env).splitlines()[1].split()
    assert listed[2] == "proposed" and listed[-2:] in (["3m", "ago"], ["2m", "ago"])
    shown = ok(["plans", "show", plan.id], api_env)
    assert "! Stale: this plan expired at " in shown
    assert "approving or rejecting it will be refused." in shown and "Decide:" not in shown

    refused = run(["plans", "approve", plan.id], api_env)

    assert refused.exit_code == 1
    assert f"Plan {plan.id} expired at " in refused.stderr and "[409 plan_not_approvable]" in refused.stderr
    after = ok(["plans", "show", plan.id], api_env)  # the refusal recorded the expiry
    assert after.startswith(f"Plan {plan.id}   EXPIRED\n") and "  decided    expired at " in after
    assert after.count("     result           declined (") == 2


def test_the_typed_client_reads_binds_the_digest_and_rejects(
    api_env: Env, state: store.StateStore, tenant: store.Tenant, operator_id: str
) -> None:
    proposed = propose(state, tenant, operator_id, event_ids=["ev_1"])
    with client.Client(api_env["FIBRIC_URL"] or "", api_env["FIBRIC_KEY"] or "") as api:
        [summary] = api.plans.summaries(status="proposed")
        assert (summary.id, summary.operator, summary.status, summary.action_count) == (
            proposed.id, "ship-risk", plantypes.PlanStatus.PROPOSED, 2)
        plan = api.plans.get(proposed.id)
        assert plan.digest == proposed.digest and plan.event_ids == ("ev_1",)
        hold = plan.actions[0]
        assert (hold.capability, hold.idempotency_key, hold.decision, hold.rule) == (
            "orders.hold", HOLD, plantypes.Decision.ALLOW, "orders.hold")
        assert hold.args == {"reason": "will miss ship-by date"} and hold.rationale

        tampered = dataclasses.replace(plan, digest="sha256:" + "0" * 64)
        with pytest.raises(client.ApiError) as caught:
            api.plans.approve(tampered)  # the digest is sent: not the plan's, so nothing runs
        assert (caught.value.status, caught.value.code) == (409, "conflict")
        with pytest.raises(client.ApiError) as caught:
            api.approve_plan(plan.id, digest="sha256:nope")
        assert caught.value.status == 409

        rejected = api.plans.reject(plan.id, "wrong order", digest=plan.digest)
        assert (rejected.status, rejected.reason) == (plantypes.PlanStatus.REJECTED, "wrong order")
        assert [r.outcome for r in rejected.results] == [plantypes.Outcome.DECLINED] * 2
        assert all(r.succeeded and r.receipt_id for r in rejected.results)
        assert rejected.decided_by is not None and rejected.decided_by.key_name is None
        assert api.get_plan(plan.id)["status"] == "rejected"


def test_a_malformed_plan_is_an_api_error_not_a_crash() -> None:
    with pytest.raises(plantypes.Malformed, match="missing field 'status'"):
        plantypes.plan({"id": "pl_1", "operator_id": "op_1", "proposed_at": "2026-06-14T09:02:09Z"})
    with pytest.raises(plantypes.Malformed, match="'sleeping' is not a valid PlanStatus"):
        plantypes.plan_summary({"id": "pl_1", "operator_id": "op_1", "status": "sleeping",
                                "action_count": 1, "proposed_at": "2026-06-14T09:02:09Z"})


# --- approve: the whole product, since only an executor can dispose of a plan ----------------------

@pytest.fixture
def fibric(state: store.StateStore, tenant: store.Tenant, tmp_path: Path) -> Iterator[Fibric]:
    with running(state, tenant, tmp_path) as f:
        yield f


def test_approve_runs_what_was_shown_and_exits_3_when_an_action_is_refused(fibric: Fibric) -> None:
    env: Env = {"FIBRIC_URL": fibric.url, "FIBRIC_KEY": fibric.key}
    read = {"capability": "orders.read", "entity_key": "order:SO-10884",
            "idempotency_key": "ship-risk:SO-10884:read", "args": {}, "decision": "BLOCK"}
    plan = fibric.propose([*example_actions(), read])

    approved = run(["plans", "approve", plan.id, "--note", "ops@acme.com"], env)

    assert approved.exit_code == 3, approved.output
    first, header, *rows = approved.stdout.splitlines()
    assert first == f"plan {plan.id} blocked" or first == f"plan {plan.id} executed"
    assert header.split() == ["ACTION", "CAPABILITY", "DECISION", "OUTCOME", "RECEIPT", "NOTE"]
    cells = {row.split()[0]: row.split() for row in rows}
    assert cells[HOLD][1:4] == ["orders.hold", "ALLOW", "applied"] and cells[HOLD][4].startswith("rc_")
    assert cells[NOTIFY][2:4] == ["ALERT", "applied"] and cells[NOTIFY][5:] == ["flagged", "for", "a",
                                                                                 "person"]
    assert cells[read["idempotency_key"]][2:4] == ["BLOCK", "refused"]
    assert cells[read["idempotency_key"]][5:] == ["rule", "default-deny"]
    assert approved.stderr == "Error: 1 of 3 actions did not run as approved (1 refused)\n"
    assert effects(fibric.orders_db, HOLD) == 1 and effects(fibric.orders_db, NOTIFY) == 1
    receipt = fibric.ledger.get(fibric.tenant.id, cells[HOLD][4])
    assert receipt.approver == "ops@acme.com"

    shown = ok(["plans", "show", plan.id], env)
    assert "! Stale: this plan is " in shown and "  note       ops@acme.com\n" in shown
    assert f"     result           applied (ALLOW), receipt {cells[HOLD][4]}\n" in shown
    assert "; rule default-deny" in shown
    again = run(["plans", "approve", plan.id], env)
    assert again.exit_code == 1 and "[409 plan_not_approvable]" in again.stderr


def test_approve_only_some_actions_declines_the_rest(fibric: Fibric) -> None:
    env: Env = {"FIBRIC_URL": fibric.url, "FIBRIC_KEY": fibric.key}
    plan = fibric.propose()
    unknown = run(["plans", "approve", plan.id, "--only", "nope"], env)
    assert unknown.exit_code == 2 and "only_actions[0]" in unknown.stderr

    approved = run(["plans", "approve", plan.id, "--only", HOLD], env)

    assert approved.exit_code == 0, approved.output
    first, _, *rows = approved.stdout.splitlines()
    assert first == f"plan {plan.id} executed"
    assert {row.split()[0]: row.split()[3] for row in rows} == {HOLD: "applied", NOTIFY: "declined"}
    assert effects(fibric.orders_db, HOLD) == 1 and effects(fibric.orders_db, NOTIFY) == 0
