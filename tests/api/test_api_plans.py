"""/v1/plans: list, retrieve and approve; approval asks the executor, it never bypasses it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from api_support import (
    Executor,
    TestClient,
    action,
    apply,
    error_of,
    fields_of,
    operator_doc,
    policy_doc,
)
from live_server import serving

from fibric import settings, store
from fibric.api import create_app
from fibric.store import plan_store, receipt_store

ACTIONS = [
    action("orders.hold", "ship-risk:SO-10884:hold", "ALLOW", reason="will miss ship-by date"),
    action("orders.notify", "ship-risk:SO-10884:notify", "ALERT", to="owner"),
]


def operator_id(client: TestClient, name: str = "ship-risk") -> str:
    apply(client, [policy_doc("guard"), operator_doc(name, "guard")])
    found: str = client.get(f"/v1/operators/{name}").json()["id"]
    return found


def propose(state: store.StateStore, tenant: store.Tenant, operator: str,
            actions: Sequence[dict[str, Any]] = ACTIONS) -> plan_store.Plan:
    return plan_store.propose(state, tenant.id, operator_id=operator, actions=actions, policy_id="pol_22b9")


@pytest.fixture
def plan(client: TestClient, state: store.StateStore, tenant: store.Tenant) -> plan_store.Plan:
    return propose(state, tenant, operator_id(client))


@pytest.fixture
def executor(app: Any, state: store.StateStore, ledger: receipt_store.Ledger) -> Executor:
    attached = Executor(state, ledger)
    app.state.executor = attached
    return attached


def test_list_has_the_reference_shape(client: TestClient, plan: plan_store.Plan) -> None:
    listed = client.get("/v1/plans", params={"status": "proposed"}).json()
    assert listed["object"] == "list" and listed["has_more"] is False and listed["next_cursor"] is None
    assert listed["data"] == [{
        "id": plan.id, "object": "execution_plan", "operator_id": plan.operator_id, "operator": None,
        "status": "proposed", "action_count": 2,
        "proposed_at": plan.proposed_at.strftime("%Y-%m-%dT%H:%M:%SZ"), "expires_at": None,
    }]


def test_retrieve_shows_each_action_and_its_decision(client: TestClient, plan: plan_store.Plan) -> None:
    body = client.get(f"/v1/plans/{plan.id}").json()
    assert body["id"].startswith("pl_")
    assert body["object"] == "execution_plan"
    assert body["operator_id"] == plan.operator_id
    assert body["proposed_by"] == "model"
    assert body["status"] == "proposed"
    assert body["policy_id"] == "pol_22b9"
    assert body["actions"] == [
        {"capability": "orders.hold", "entity_key": "order:SO-10884",
         "idempotency_key": "ship-risk:SO-10884:hold", "args": {"reason": "will miss ship-by date"},
         "decision": "ALLOW"},
        {"capability": "orders.notify", "entity_key": "order:SO-10884",
         "idempotency_key": "ship-risk:SO-10884:notify", "args": {"to": "owner"}, "decision": "ALERT"},
    ]
    assert body["approver"] is None and body["results"] is None and body["executed_at"] is None


def test_filters_by_status_and_operator(
    client: TestClient, state: store.StateStore, tenant: store.Tenant
) -> None:
    first = operator_id(client, "ship-risk")
    second = operator_id(client, "restock")
    a = propose(state, tenant, first)
    b = propose(state, tenant, second)
    c = propose(state, tenant, first)
    plan_store.approve(state, tenant.id, c.id, approver="x")

    def ids(**params: str) -> list[str]:
        response = client.get("/v1/plans", params=params)
        assert response.status_code == 200, response.text
        return [p["id"] for p in response.json()["data"]]

    assert ids() == [c.id, b.id, a.id]
    assert ids(operator_id=first) == [c.id, a.id]
    assert ids(status="proposed") == [b.id, a.id]
    assert ids(status="approved", operator_id=first) == [c.id]
    assert ids(status="executed") == []


def test_a_filter_naming_another_tenants_operator_is_an_empty_list(
    client: TestClient, other_client: TestClient, state: store.StateStore, other_tenant: store.Tenant,
    plan: plan_store.Plan,
) -> None:
    theirs = propose(state, other_tenant, operator_id(other_client))
    assert client.get("/v1/plans", params={"operator_id": theirs.operator_id}).json()["data"] == []
    assert [p["id"] for p in other_client.get("/v1/plans").json()["data"]] == [theirs.id]


@pytest.mark.parametrize(("params", "field"), [
    ({"status": "pending"}, "status"),
    ({"operator_id": "op 1"}, "operator_id"),
    ({"operator_id": "x" * 201}, "operator_id"),
    ({"limit": "0"}, "limit"),
    ({"cursor": "cur_nope"}, "cursor"),
])
def test_bad_list_parameters_are_400_naming_them(
    client: TestClient, params: dict[str, str], field: str
) -> None:
    assert fields_of(error_of(client.get("/v1/plans", params=params), 400, "invalid_request")) == [field]


def test_approve_without_an_executor_fails_closed(
    app: Any, client: TestClient, plan: plan_store.Plan, state: store.StateStore, tenant: store.Tenant,
    ledger: receipt_store.Ledger,
) -> None:
    response = client.post(f"/v1/plans/{plan.id}/approve", json={"approver": "ops@acme.com"})
    error = error_of(response, 500, "internal_error")
    assert "no executor" in error["message"] and "still proposed" in error["message"]
    assert plan_store.get(state, tenant.id, plan.id).status == "proposed"
    assert ledger.list_receipts(tenant.id) == []
    # Once an executor runs, the same plan approves normally.
    app.state.executor = Executor(state, ledger)
    approved = client.post(f"/v1/plans/{plan.id}/approve", json={"approver": "ops@acme.com"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "executed"


def test_approve_hands_the_plan_to_the_executor(
    client: TestClient, plan: plan_store.Plan, executor: Executor, tenant: store.Tenant,
) -> None:
    response = client.post(f"/v1/plans/{plan.id}/approve", json={"approver": "ops@acme.com"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert executor.calls == [(plan.id, "approved", None)]
    assert body["id"] == plan.id and body["object"] == "execution_plan"
    assert body["status"] == "executed"
    assert body["approver"] == "ops@acme.com"
    assert [(r["idempotency_key"], r["decision"], r["outcome"]) for r in body["results"]] == [
        ("ship-risk:SO-10884:hold", "ALLOW", "applied"),
        ("ship-risk:SO-10884:notify", "ALERT", "applied"),
    ]
    for result in body["results"]:
        receipt = client.get(f"/v1/receipts/{result['receipt_id']}").json()
        assert receipt["plan_id"] == plan.id
        assert receipt["approver"] == "ops@acme.com"
        assert receipt["tenant_id"] == tenant.id
    assert body["executed_at"] is not None


def test_the_approver_defaults_to_the_api_keys_id(
    app: Any, state: store.StateStore, tenant: store.Tenant, plan: plan_store.Plan, executor: Executor
) -> None:
    key, secret = state.create_api_key(tenant.id, frozenset({"plans:approve"}))
    response = TestClient(app, headers={"Authorization": f"Bearer {secret}"}).post(
        f"/v1/plans/{plan.id}/approve")
    assert response.status_code == 200, response.text
    assert response.json()["approver"] == key.id


def test_a_blocked_action_stays_blocked(
    client: TestClient, state: store.StateStore, tenant: store.Tenant, executor: Executor
) -> None:
    blocked = propose(state, tenant, operator_id(client),
                      [action("orders.hold", "ship-risk:SO-1:hold", "BLOCK")])
    body = client.post(f"/v1/plans/{blocked.id}/approve", json={}).json()
    assert body["status"] == "blocked"
    [result] = body["results"]
    assert result["outcome"] == "refused" and result["decision"] == "BLOCK" and result["rule"]
    receipt = client.get(f"/v1/receipts/{result['receipt_id']}").json()
    assert receipt["outcome"] == "refused" and receipt["policy"]["decision"] == "BLOCK"


@pytest.mark.parametrize("status", ["approved", "executed", "blocked"])
def test_a_plan_that_is_not_proposed_is_409_plan_not_approvable(
    client: TestClient, state: store.StateStore, tenant: store.Tenant, plan: plan_store.Plan,
    executor: Executor, status: str,
) -> None:
    plan_store.approve(state, tenant.id, plan.id, approver="someone")
    if status != "approved":
        plan_store.record_results(state, tenant.id, plan.id, status=status, results=[])
    response = client.post(f"/v1/plans/{plan.id}/approve", json={"approver": "ops@acme.com"})
    error = error_of(response, 409, "plan_not_approvable")
    assert error["message"].startswith(f"Plan {plan.id} is ")
    assert error["message"].endswith("and cannot be approved.")
    assert executor.calls == []
    assert plan_store.get(state, tenant.id, plan.id).approver == "someone"


def test_only_actions_runs_a_subset(client: TestClient, plan: plan_store.Plan, executor: Executor) -> None:
    body = client.post(f"/v1/plans/{plan.id}/approve",
                       json={"only_actions": ["ship-risk:SO-10884:notify"]}).json()
    assert executor.calls == [(plan.id, "approved", ["ship-risk:SO-10884:notify"])]
    assert [r["idempotency_key"] for r in body["results"]] == ["ship-risk:SO-10884:notify"]


@pytest.mark.parametrize(("approval", "field"), [
    ({"only_actions": ["ship-risk:SO-10884:hold", "nope"]}, "only_actions[1]"),
    ({"only_actions": []}, "only_actions"),
    ({"only_actions": "ship-risk:SO-10884:hold"}, "only_actions"),
    ({"approver": 5}, "approver"),
    ({"approver": ""}, "approver"),
    ({"tenant_id": "t_other"}, "tenant_id"),
    ({"force": True}, "force"),
])
def test_a_bad_approval_is_400_and_changes_nothing(
    client: TestClient, plan: plan_store.Plan, executor: Executor, state: store.StateStore,
    tenant: store.Tenant, approval: dict[str, Any], field: str,
) -> None:
    response = client.post(f"/v1/plans/{plan.id}/approve", json=approval)
    assert fields_of(error_of(response, 400, "invalid_request")) == [field]
    assert executor.calls == []
    assert plan_store.get(state, tenant.id, plan.id).status == "proposed"


def test_another_tenants_plan_is_404_for_every_route(
    client: TestClient, other_client: TestClient, state: store.StateStore, other_tenant: store.Tenant,
    executor: Executor,
) -> None:
    theirs = propose(state, other_tenant, operator_id(other_client))
    missing = "pl_0000000000000000"
    for method, path in (("GET", "/v1/plans/{}"), ("POST", "/v1/plans/{}/approve")):
        foreign = client.request(method, path.format(theirs.id), json={})
        absent = client.request(method, path.format(missing), json={})
        assert error_of(foreign, 404, "not_found")["message"].replace(theirs.id, "<id>") == \
            error_of(absent, 404, "not_found")["message"].replace(missing, "<id>")
    assert executor.calls == []
    assert plan_store.get(state, other_tenant.id, theirs.id).status == "proposed"


def test_two_approvals_at_once_execute_the_plan_once(
    app: Any, state: store.StateStore, tenant: store.Tenant, plan: plan_store.Plan, executor: Executor
) -> None:
    _, secret = state.create_api_key(tenant.id, frozenset({"plans:approve"}))
    barrier = threading.Barrier(6)
    with serving(app) as url, httpx.Client(base_url=url, timeout=30,
                                           headers={"Authorization": f"Bearer {secret}"}) as http:
        def approve(_: int) -> httpx.Response:
            barrier.wait(timeout=10)
            return http.post(f"/v1/plans/{plan.id}/approve", json={})

        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(approve, range(6)))
    assert sorted(r.status_code for r in responses) == [200] + [409] * 5
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 409} == {"plan_not_approvable"}
    assert len(executor.calls) == 1


def test_an_async_executor_is_awaited(
    app: Any, client: TestClient, plan: plan_store.Plan, state: store.StateStore, ledger: receipt_store.Ledger
) -> None:
    inner = Executor(state, ledger)

    class AsyncExecutor:
        async def execute(
            self, plan: plan_store.Plan, *, only_actions: Sequence[str] | None
        ) -> plan_store.Plan:
            return inner.execute(plan, only_actions=only_actions)

    app.state.executor = AsyncExecutor()
    assert client.post(f"/v1/plans/{plan.id}/approve").json()["status"] == "executed"


@pytest.mark.parametrize(("method", "path", "scope"), [
    ("GET", "/v1/plans", "plans:read"),
    ("GET", "/v1/plans/pl_1", "plans:read"),
    ("POST", "/v1/plans/pl_1/approve", "plans:approve"),
])
def test_plans_need_their_scopes(
    make_client: Callable[..., TestClient], tenant: store.Tenant, method: str, path: str, scope: str
) -> None:
    response = make_client(tenant, frozenset(store.SCOPES) - {scope}).request(method, path, json={})
    assert f"'{scope}'" in error_of(response, 403, "insufficient_scope")["message"]


def test_a_plain_executor_calling_slow_tools_leaves_the_api_answering(
    client: TestClient, state: store.StateStore, tenant: store.Tenant, ledger: receipt_store.Ledger
) -> None:
    # One quick thread, two approvals whose executors are stuck in their tools: reads still answer.
    operator = operator_id(client)
    first = propose(state, tenant, operator)
    second = propose(state, tenant, operator, [{**a, "idempotency_key": a["idempotency_key"] + ":2"}
                                               for a in ACTIONS])
    inner = Executor(state, ledger)
    started, release = threading.Semaphore(0), threading.Event()

    class SlowTools:
        def execute(self, plan: plan_store.Plan, *, only_actions: Sequence[str] | None) -> plan_store.Plan:
            started.release()
            release.wait(10)
            return inner.execute(plan, only_actions=only_actions)

    config = settings.Settings(server=settings.ServerSettings(worker_threads=1))
    app = create_app(config, state, receipts=ledger, executor=SlowTools())
    _, secret = state.create_api_key(tenant.id, frozenset({"plans:read", "plans:approve"}))
    headers = {"Authorization": f"Bearer {secret}"}
    with serving(app) as url, httpx.Client(base_url=url, timeout=30, headers=headers) as http, \
            ThreadPoolExecutor(2) as pool:
        approvals = [pool.submit(http.post, f"/v1/plans/{p.id}/approve", json={}) for p in (first, second)]
        assert started.acquire(timeout=5) and started.acquire(timeout=5)
        read = http.get(f"/v1/plans/{first.id}", timeout=5)
        release.set()
        statuses = [a.result().json()["status"] for a in approvals]

    assert read.status_code == 200 and read.json()["status"] == "approved"
    assert statuses == ["executed", "executed"]
