"""Every receipt keeps the decision record: the input its policy saw, masked where the Policy says.

The real product on loopback (tests/executor/executor_support.py): the example
operator, policy and order system, the embedded Rego engine, receipts of record.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from decisions_support import QUERY, REASON_POLICY, SHIP_RISK, approve, policy_doc, running

from fibric import errors, policies, specs, store
from fibric.policies import masking
from fibric.store import receipt_store

HOLD, NOTIFY = "ship-risk:SO-10884:hold", "ship-risk:SO-10884:notify"


def test_a_receipt_keeps_the_input_its_policy_decided_on(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path
) -> None:
    with running(state, tenant, tmp_path) as f:
        event = f.ingest()
        plan = f.propose(event_id=event.id)
        results = approve(f, plan.id)
        hold = f.ledger.get(tenant.id, results[HOLD]["receipt_id"])
        notify = f.ledger.get(tenant.id, results[NOTIFY]["receipt_id"])
        with f.client() as c:
            shown = c.get(f"/v1/receipts/{hold.id}").json()

    record = hold.decision_input
    assert record is not None
    assert record["action"] == {"capability": "orders.hold", "entity_key": "order:SO-10884",
                                "idempotency_key": HOLD, "args": {"reason": "will miss ship-by date"}}
    assert record["tenant"] == {"id": tenant.id}
    assert (record["plan_id"], record["event"]["id"]) == (plan.id, event.id)
    assert record["operator"]["name"] == "ship-risk" and record["tool"]["name"]
    context = record["context"]  # what only the executor knows is there too
    assert isinstance(context["plan_age_seconds"], int) and context["entity_changed_since_plan"] is False
    assert set(context["counts"]) == {"entity", "operator", "capability", "entity_capability"}
    assert shown["decision_input"] == record  # the API shows the record

    # The record, the source of policy_sha256 and the query reproduce each decision.
    source = SHIP_RISK.read_text()
    assert hold.policy_sha256 == policies.source_sha256(source) and hold.policy["query"] == QUERY
    engine = policies.open_engine("embedded", timeout=5.0)
    try:
        compiled = policies.compile(source, query=hold.policy["query"])
        for receipt in (hold, notify):
            assert receipt.decision_input is not None
            again = policies.evaluate(engine, compiled, receipt.decision_input)
            assert (again.decision.value, again.rule) == (receipt.decision, receipt.rule)
    finally:
        engine.close()

    # The record is part of the receipt's hash: changing it breaks the chain.
    values = dataclasses.asdict(hold)
    assert receipt_store.chain_hash(values) == hold.hash
    tampered = {**values, "decision_input": {**record, "action": {**record["action"], "args": {}}}}
    assert receipt_store.chain_hash(tampered) != hold.hash


def test_no_record_when_no_policy_ran(state: store.StateStore, tenant: store.Tenant, tmp_path: Path) -> None:
    with running(state, tenant, tmp_path) as f:
        first = approve(f, f.propose().id, {"only_actions": [HOLD]})
        again = approve(f, f.propose().id, {"only_actions": [HOLD]})
        declined = f.ledger.get(tenant.id, first[NOTIFY]["receipt_id"])
        dedup = f.ledger.get(tenant.id, again[HOLD]["receipt_id"])
        applied = f.ledger.get(tenant.id, first[HOLD]["receipt_id"])
    assert (declined.outcome, declined.decision_input) == ("declined", None)
    assert (dedup.decision, dedup.decision_input) == ("DEDUP", None)
    assert applied.decision_input is not None


def test_masked_fields_leave_the_record_but_not_the_decision(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path
) -> None:
    mask = ["/action/args/reason", "/event/data/ship_by", "/operator/labels", "/action/args/absent"]
    with running(state, tenant, tmp_path) as f:
        with f.client() as c:
            applied = c.post("/v1/apply", json={"documents": [policy_doc(REASON_POLICY, mask=mask)]})
            assert applied.status_code == 200, applied.text
        event = f.ingest()
        results = approve(f, f.propose(event_id=event.id).id)
        hold = f.ledger.get(tenant.id, results[HOLD]["receipt_id"])

    assert (hold.decision, hold.rule) == ("ALLOW", "known-reason")  # decided on the real reason
    record = hold.decision_input
    assert record is not None
    assert record["action"]["args"] == {"reason": masking.MASKED}
    assert record["event"]["data"] == {"status": "open", "ship_by": masking.MASKED, "carrier_scanned": False}
    assert record["operator"]["labels"] == masking.MASKED
    assert "absent" not in record["action"]["args"]  # a pointer that leads nowhere masks nothing
    assert "will miss ship-by date" not in str(record) and "2026-06-15" not in str(record)


def test_masking_copies_and_never_changes_what_the_policy_sees() -> None:
    items = [{"sku": "a"}, {"sku": "b"}]
    live = {"action": {"args": {"card": "4111", "items": items}}, "tenant": {"id": "t"}}
    record = masking.record(live, ["/action/args/card", "/action/args/items/1/sku", "/action/args/items/9"])
    assert record["action"]["args"] == {"card": masking.MASKED,
                                        "items": [{"sku": "a"}, {"sku": masking.MASKED}]}
    assert live["action"]["args"] == {"card": "4111", "items": [{"sku": "a"}, {"sku": "b"}]}
    assert masking.has_masked(record) and not masking.has_masked(live)
    escaped = masking.record({"action": {"args": {"a/b": 1, "c~d": 2}}},
                             ["/action/args/a~1b", "/action/args/c~0d"])
    assert escaped["action"]["args"] == {"a/b": masking.MASKED, "c~d": masking.MASKED}


@pytest.mark.parametrize(("pointer", "message"), [
    ("action.args.card", "must start with '/'"),
    ("/input/action", "does not start at a field of the input document"),
    ("/action//card", "empty segment"),
    ("/action/a~2", "'~' must be written ~0"),
])
def test_a_bad_mask_pointer_names_the_field_and_line(pointer: str, message: str) -> None:
    text = f"""apiVersion: fibric.io/v1
kind: Policy
metadata:
  name: guard
spec:
  rego: "package guard\\n"
  mask:
    - /action/args/ok
    - {pointer}
"""
    with pytest.raises(errors.SpecInvalid) as caught:
        specs.load_text(text, "policies.yaml")
    [problem] = caught.value.problems
    assert (problem.path, problem.file, problem.line) == ("spec.mask[1]", "policies.yaml", 9)
    assert message in problem.message
