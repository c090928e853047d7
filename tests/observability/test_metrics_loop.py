"""The example loop, scraped: every counter it should move has moved, and the logs tell the same story.

The whole system (fibric.system.build) on loopback, connected to the example
order server over stdio: the reference's example event goes in over HTTP, the
ship-risk operator's run proposes a plan, a person approves it, the executor
holds the order and notifies its owner, and the sealer seals both receipts.
Then GET /metrics, without a key, as Prometheus scrapes it.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import httpx
from observability_support import json_lines, label_values, total, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "executor"))

from executor_support import EXAMPLE_EVENT, Fibric, running

from fibric import store


def scrape(fibric: Fibric) -> str:
    response = httpx.get(f"{fibric.url}/metrics", timeout=30.0)  # no key: the Prometheus norm
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def sealed(scrape: str, receipts: int) -> str | None:
    """The scrape, once it shows `receipts` sealed."""
    return scrape if total(scrape, "fibric_sealing_lag_seconds_count") >= receipts else None


def run_the_example_loop(fibric: Fibric) -> str:
    """Event in, plan proposed by the operator's run, approved and executed; the approved plan's id."""
    with fibric.client() as c:
        assert c.post("/v1/events", json=EXAMPLE_EVENT).status_code == 202
        assert c.post("/v1/events", json=EXAMPLE_EVENT).status_code == 200  # the same event: dedup
        operator_id = fibric.operator_id()
        [plan] = wait_for(lambda: c.get("/v1/plans", params={"operator_id": operator_id}).json()["data"],
                          "the run's plan")
        approved = c.post(f"/v1/plans/{plan['id']}/approve", json={"approver": "ops@acme.com"})
        assert approved.status_code == 200, approved.text
        assert {(r["decision"], r["outcome"]) for r in approved.json()["results"]} == {
            ("ALLOW", "applied"), ("ALERT", "applied")}
        return str(plan["id"])


def test_the_example_loop_moves_the_counters(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path, json_logs: io.StringIO
) -> None:
    with running(state, tenant, tmp_path, routing=True) as fibric:
        before = scrape(fibric)
        plan_id = run_the_example_loop(fibric)
        after = wait_for(lambda: sealed(scrape(fibric), 2), "both receipts sealed")
        key = fibric.key

    assert total(before, "fibric_events_ingested_total") == 0
    assert total(after, "fibric_events_ingested_total", result="new") == 1
    assert total(after, "fibric_events_ingested_total", result="dedup") == 1
    assert total(after, "fibric_runs_finished_total", trigger="event", status="succeeded") >= 1
    assert total(after, "fibric_plans", status="executed") == 1
    assert total(after, "fibric_decisions_total", decision="ALLOW", outcome="applied") == 1
    assert total(after, "fibric_decisions_total", decision="ALERT", outcome="applied") == 1
    assert total(after, "fibric_tool_call_duration_seconds_count", connector="magento", result="ok") >= 2
    assert total(after, "fibric_tool_call_duration_seconds_sum", connector="magento") > 0
    assert total(after, "fibric_sealer_caught_up_timestamp_seconds") > 0
    assert total(after, "fibric_webhook_backlog", stage="delivery") == 0  # the test's specs have no webhook
    requests = "fibric_http_request_duration_seconds_count"
    assert total(after, requests, route="/v1/events", method="POST", status="2xx") == 2
    assert total(after, requests, route="/v1/plans/{plan_id}/approve", method="POST", status="2xx") == 1
    assert total(after, requests, route="/metrics", method="GET") >= 1

    # Bounded labels, and nothing of the tenant's: route templates, never a raw path or an id.
    assert all(route.startswith("/") or route == "unmatched" for route in label_values(after, "route"))
    assert plan_id not in after and tenant.id not in after and tenant.name not in after
    assert not label_values(after, "tenant_id")  # per-tenant labels are the installation's opt-in

    # The logs: one JSON object per line, an access line per request, a disposal line per action.
    lines = json_lines(json_logs.getvalue())
    access = [line for line in lines if line["logger"] == "fibric.access"]
    approve = [line for line in access if line["route"] == "/v1/plans/{plan_id}/approve"]
    assert len(approve) == 1 and approve[0]["status"] == 200 and approve[0]["method"] == "POST"
    assert approve[0]["tenant_id"] == tenant.id and approve[0]["request_id"].startswith("req_")
    assert approve[0]["duration_ms"] > 0 and approve[0]["level"] == "INFO" and approve[0]["time"]
    disposals = [line for line in lines if line["logger"] == "fibric.disposal"]
    assert {(d["plan_id"], d["decision"], d["outcome"]) for d in disposals} == {
        (plan_id, "ALLOW", "applied"), (plan_id, "ALERT", "applied")}
    assert all(d["receipt_id"].startswith("rc_") and d["idempotency_key"] for d in disposals)
    assert key not in json_logs.getvalue() and key[len(store.KEY_PREFIX):] not in json_logs.getvalue()
    assert "will miss ship-by date" not in json_logs.getvalue()  # an action's args are the tenant's data
