"""The flood: one event sent 657 times at once, its plan approved by 10 clients at once.

Exactly one tool call per idempotency key, one `applied` receipt per action,
DEDUP or 409 for everyone else, and no receipt lost: every receipt a response
names is in the ledger, and the ledger holds nothing no response accounts for.
The first test goes through real routing (the event wakes the ship-risk
operator, whose run proposes the plan); the second races approvals across two
plans with the same actions, as two replicas' runs might propose them.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from executor_support import EXAMPLE_EVENT, Fibric, effect_keys, running

from fibric import store
from fibric.store import event_store

FLOOD = 657
APPROVERS = 10


async def _flood(f: Fibric, plan_ids: list[str]) -> tuple[list[httpx.Response], list[httpx.Response]]:
    headers = {"Authorization": f"Bearer {f.key}"}
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=f.url, headers=headers, timeout=120, limits=limits) as c:
        sent = await asyncio.gather(*(c.post("/v1/events", json=EXAMPLE_EVENT) for _ in range(FLOOD)))
        approvals = await asyncio.gather(*(
            c.post(f"/v1/plans/{plan_ids[n % len(plan_ids)]}/approve", json={"approver": f"person-{n}"})
            for n in range(APPROVERS)))
    return sent, approvals


async def _send(f: Fibric) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {f.key}"}
    async with httpx.AsyncClient(base_url=f.url, headers=headers, timeout=120,
                                 limits=httpx.Limits(max_connections=64)) as c:
        return list(await asyncio.gather(*(c.post("/v1/events", json=EXAMPLE_EVENT) for _ in range(FLOOD))))


async def _approve(f: Fibric, plan_id: str) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {f.key}"}
    async with httpx.AsyncClient(base_url=f.url, headers=headers, timeout=120) as c:
        calls = [c.post(f"/v1/plans/{plan_id}/approve", json={"approver": f"person-{n}"})
                 for n in range(APPROVERS)]
        return list(await asyncio.gather(*calls))


def test_the_flood_through_routing_runs_each_action_once(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path
) -> None:
    with running(state, tenant, tmp_path, routing=True) as f:
        sent = asyncio.run(_send(f))

        assert Counter(r.status_code for r in sent) == {202: 1, 200: FLOOD - 1}
        assert sum(not r.json()["dedup"] for r in sent) == 1
        deadline = time.monotonic() + 60
        with f.client() as c:
            while not (proposed := c.get("/v1/plans", params={"status": "proposed"}).json()["data"]):
                assert time.monotonic() < deadline, "the ship-risk operator never proposed a plan"
                time.sleep(0.1)
            time.sleep(1.0)  # any duplicate run would have proposed by now
            listed = c.get("/v1/plans").json()["data"]
        assert len(listed) == 1  # one event stored, one run, one plan
        plan_id = proposed[0]["id"]

        approvals = asyncio.run(_approve(f, plan_id))

        assert sorted(r.status_code for r in approvals) == [200] + [409] * (APPROVERS - 1)
        assert {r.json()["error"]["code"] for r in approvals if r.status_code == 409} == {
            "plan_not_approvable"}
        results = next(r.json()["results"] for r in approvals if r.status_code == 200)
        assert sorted((r["decision"], r["outcome"]) for r in results) == [
            ("ALERT", "applied"), ("ALLOW", "applied")]
        keys = Counter(effect_keys(f.orders_db))
        assert keys == {r["idempotency_key"]: 1 for r in results}  # one tool call per key
        ledger = f.ledger.list_receipts(tenant.id)
        assert sorted(r.id for r in ledger) == sorted(r["receipt_id"] for r in results)
        with f.client() as c:  # the run that proposed the plan counts what it applied
            # (not necessarily the operator's last run: the example's */15 schedule may run meanwhile)
            runs = c.get("/v1/runs", params={"operator_id": proposed[0]["operator_id"]}).json()["data"]
        [proposing] = [r for r in runs if r["plan_id"] == plan_id and r["trigger"] == "event"]
        assert proposing["applied"] == 2


def test_approvals_racing_across_plans_apply_each_action_once(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path
) -> None:
    with running(state, tenant, tmp_path) as f:
        # The event is routed to the ship-risk operator; its run proposes this plan (twice, as two
        # replicas' runs might, so approvals also race across plans with the same actions).
        first = f.ingest()
        plan_ids = [f.propose(event_id=first.id).id, f.propose(event_id=first.id).id]

        sent, approvals = asyncio.run(_flood(f, plan_ids))

        assert Counter(r.status_code for r in sent) == {200: FLOOD}  # deduplicated, not rejected
        assert {r.json()["id"] for r in sent} == {first.id}
        assert len(event_store.list_events(state, tenant.id)) == 1

        statuses = Counter(r.status_code for r in approvals)
        assert set(statuses) <= {200, 409}, [r.text for r in approvals]
        assert statuses[200] >= 1
        codes = {r.json()["error"]["code"] for r in approvals if r.status_code == 409}
        assert codes <= {"plan_not_approvable", "conflict"}

        keys = Counter(effect_keys(f.orders_db))
        assert keys == {"ship-risk:SO-10884:hold": 1, "ship-risk:SO-10884:notify": 1}

        ledger = f.ledger.list_receipts(tenant.id)
        applied = Counter(r.idempotency_key for r in ledger if r.outcome == "applied")
        assert applied == keys
        assert {r.outcome for r in ledger} <= {"applied", "deduplicated"}
        named: list[dict[str, Any]] = [res for r in approvals if r.status_code == 200
                                       for res in r.json()["results"]]
        assert sorted(res["receipt_id"] for res in named) == sorted(r.id for r in ledger)
        assert all((res["decision"] == "DEDUP") == (res["outcome"] == "deduplicated") for res in named)
