"""An operator whose tools have no strict schema says so on its status, before any run fails.

The whole system (fibric.system.build) with an LLM route: an operator on the
example order tools shows StructuredOutput True; one that also needs a tool
taking a free-form map (a real MCP server started here) shows it False,
naming the tool and why, and its route then asks with strict: false.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "executor"))

from executor_support import running

from fibric import store
from fibric.settings import LlmSettings

LABELS_SERVER = Path(__file__).resolve().parent / "servers" / "labels_server.py"
POLICY = "ship-risk-guard"  # the example policy
ROUTE = {"base_url": "http://127.0.0.1:9/v1", "model": "gpt-test", "tenants": "*"}


def doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "fibric.io/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def structured_output(client: Any, name: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        conditions = {c["type"]: c for c in client.get(f"/v1/operators/{name}").json()["conditions"]}
        condition = conditions.get("StructuredOutput")
        if condition is not None or time.monotonic() > deadline:
            assert condition is not None, f"no StructuredOutput condition on {name}: {conditions}"
            return dict(condition)
        time.sleep(0.05)


def test_an_operator_says_whether_its_route_can_ask_strictly(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path
) -> None:
    documents = [
        doc("Connector", "labels", {"transport": {"catalog": "labels"},
                                    "capabilities": {"labels.set": "set"}}),
        doc("Operator", "tidy", {"capabilities": ["orders.hold"], "policy": POLICY, "model": "gpt"}),
        doc("Operator", "tagger", {"capabilities": ["orders.hold", "labels.set"], "policy": POLICY,
                                   "model": "gpt"}),
    ]
    with running(state, tenant, tmp_path, catalog={"labels": LABELS_SERVER},
                 llm=LlmSettings(routes={"gpt": ROUTE})) as f, f.client() as c:
        response = c.post("/v1/apply", json={"documents": documents})
        assert response.status_code == 200, response.text
        deadline = time.monotonic() + 60
        while c.get("/v1/connectors/cn_labels").json().get("status") != "connected":
            assert time.monotonic() < deadline, "the labels server never connected"
            time.sleep(0.05)
        c.post("/v1/apply", json={"documents": documents[2:]})  # unchanged: the resync is not waited for
        f.system.controller.notify(tenant.id, "Operator", "tagger")

        tidy = structured_output(c, "tidy")
        assert (tidy["status"], tidy["reason"]) == ("True", "Strict")
        deadline = time.monotonic() + 60
        while (tagger := structured_output(c, "tagger"))["status"] != "False":
            assert time.monotonic() < deadline, tagger
            f.system.controller.notify(tenant.id, "Operator", "tagger")
            time.sleep(0.1)
        assert tagger["reason"] == "NotStrict"
        assert tagger["message"] == ("route 'gpt' asks with strict: false, since labels.set: args.labels: an "
                                     "object with free-form keys has no strict form")
        ready = {c["type"]: c["status"] for c in c.get("/v1/operators/tagger").json()["conditions"]}["Ready"]
        assert ready == "True"  # a warning: the operator still runs

        # Back on the rules model, there is no route to ask: the condition goes.
        rules = doc("Operator", "tagger", {"capabilities": ["orders.hold", "labels.set"], "policy": POLICY})
        assert c.post("/v1/apply", json={"documents": [rules]}).status_code == 200
        deadline = time.monotonic() + 60
        while "StructuredOutput" in {x["type"] for x in c.get("/v1/operators/tagger").json()["conditions"]}:
            assert time.monotonic() < deadline, "StructuredOutput stayed on a rules operator"
            time.sleep(0.05)
