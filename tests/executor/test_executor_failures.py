"""When the tool itself goes wrong: a tool error is `failed`, a server dying mid-call is `in_doubt`.

A toy MCP server (tests/connectors/servers/toy_server.py) beside the order
system: `fail` answers with a tool error, `reject` with a protocol error
(nothing ran), `crash` exits its process mid-call, so whether it acted is
unknown and the tool is not annotated idempotent.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from executor_support import ROOT, running

from fibric import store
from fibric.store import plan_store

TOY = ROOT / "tests" / "connectors" / "servers" / "toy_server.py"
ALLOW_ALL = (
    'package fibric.allow_all\n\nimport rego.v1\n\ndecision := {"decision": "ALLOW", "rule": "allow-all"}\n'
)


def doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "fibric.io/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def test_tool_errors_fail_and_a_dying_server_is_in_doubt(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path
) -> None:
    capabilities = {"toy.fail": "fail", "toy.reject": "reject", "toy.crash": "crash"}
    documents = [
        doc("Policy", "allow-all", {"rego": ALLOW_ALL, "query": "data.fibric.allow_all.decision"}),
        doc("Operator", "toy-op", {"capabilities": list(capabilities), "policy": "allow-all"}),
        doc("Connector", "toy", {"transport": {"catalog": "toy"}, "capabilities": capabilities}),
    ]
    with running(state, tenant, tmp_path, catalog={"toy": TOY}) as f, f.client() as c:
        assert c.post("/v1/apply", json={"documents": documents}).status_code == 200
        deadline = time.monotonic() + 60
        while c.get("/v1/connectors/cn_toy").json().get("status") != "connected":
            assert time.monotonic() < deadline, "the toy server never connected"
            time.sleep(0.05)
        operator = state.get_object(tenant.id, "Operator", "toy-op")
        plan = plan_store.propose(state, tenant.id, operator_id=operator.id, policy_id=None, actions=[
            {"capability": capability, "entity_key": f"toy:{n}", "idempotency_key": f"toy:{capability}",
             "args": {"message": "no such order"} if capability == "toy.fail" else {}, "decision": "ALLOW"}
            for n, capability in enumerate(capabilities)])

        response = c.post(f"/v1/plans/{plan.id}/approve", json={})

        assert response.status_code == 200, response.text
        results = {r["idempotency_key"]: r for r in response.json()["results"]}
        assert results["toy:toy.fail"]["outcome"] == results["toy:toy.reject"]["outcome"] == "failed"
        failed = f.ledger.get(tenant.id, results["toy:toy.fail"]["receipt_id"])
        assert failed.detail["isError"] is True and "no such order" in str(failed.detail["content"])
        rejected = f.ledger.get(tenant.id, results["toy:toy.reject"]["receipt_id"])
        assert "SO-<digits>" in rejected.detail["error"]
        crashed = results["toy:toy.crash"]
        assert (crashed["decision"], crashed["outcome"], crashed["flagged"]) == ("ALERT", "in_doubt", True)
        receipt = f.ledger.get(tenant.id, crashed["receipt_id"])
        assert receipt.rule == "in-doubt" and receipt.policy["decided"] == "ALLOW"
