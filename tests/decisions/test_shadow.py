"""Shadow mode: a Policy's candidate is evaluated beside it on every decision and only ever recorded.

The real product on loopback (tests/executor/executor_support.py): the example
operator and order system, the embedded Rego engine, receipts of record. The
live policy decides; the shadow's would-be decision lands on the receipt
(`policy.shadow`) and in the `fibric_shadow_decisions` counter, and nothing it
does (block, fail to compile, error, time out) changes what runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from decisions_support import QUERY, SHIP_RISK, Fibric, approve, example_actions, policy_doc, running
from executor_support import effects
from prometheus_client import parser

from fibric import errors, policies, specs, store
from fibric.controller import applier, decide, reconcile

HOLD, NOTIFY = "ship-risk:SO-10884:hold", "ship-risk:SO-10884:notify"
LIVE = SHIP_RISK.read_text()
# The candidate a team wants to try: never hold an order.
STRICTER = LIVE.replace('{"decision": "ALLOW", "rule": "orders.hold"}',
                        '{"decision": "BLOCK", "rule": "orders.hold.never"}')
# Allows everything: looser than the live policy, which blocks what it does not know.
LOOSER = 'package fibric.ship_risk\n\ndecision := {"decision": "ALLOW", "rule": "anything"}\n'
# Evaluates for far longer than the engine's 5 s budget, the worker killed at the deadline: 10^8 scans
# of a 1 MB string, few enough statements that rego-cpp's statement limit never ends it first.
RUNAWAY = ("package fibric.ship_risk\n\nimport rego.v1\n\n"
           'long := concat("", ["' + "a" * 100 + '" | some _ in numbers.range(1, 10000)])\n\n'
           'decision := {"decision": "ALLOW", "rule": sprintf("%d", [count([x |\n'
           '\tsome x in numbers.range(1, 10000)\n\tsome y in numbers.range(1, 10000)\n'
           '\tindexof(long, "b") == x + y\n])])}\n')
UNDEFINED = "package fibric.ship_risk\n\nimport rego.v1\n\ndecision := {\"decision\": \"ALLOW\"} if false\n"
BROKEN = "package fibric.ship_risk\n\ndecision := {\n"


def apply_policy(f: Fibric, **spec: Any) -> None:
    with f.client() as c:
        applied = c.post("/v1/apply", json={"documents": [policy_doc(LIVE, **spec)]})
    assert applied.status_code == 200, applied.text


def scrape(f: Fibric) -> str:
    response = httpx.get(f"{f.url}/metrics", timeout=30.0)
    assert response.status_code == 200
    return response.text


def shadow_count(text: str, live: str, shadow: str) -> float:
    return sum(sample.value for family in parser.text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "fibric_shadow_decisions_total"
               and (sample.labels.get("live"), sample.labels.get("shadow")) == (live, shadow))


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def condition(f: Fibric, type: str) -> dict[str, Any] | None:
    obj = f.state.get_object(f.tenant.id, "Policy", "ship-risk-guard")
    if obj.status.get("observed_generation") != obj.generation:
        return None
    return next((c for c in obj.status.get("conditions", []) if c["type"] == type), None)


def test_the_receipt_records_what_the_shadow_would_have_decided(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path
) -> None:
    with running(state, tenant, tmp_path) as f:
        before = scrape(f)
        apply_policy(f, shadow={"rego": STRICTER, "query": QUERY})
        event = f.ingest()
        results = approve(f, f.propose(event_id=event.id).id)
        hold = f.ledger.get(tenant.id, results[HOLD]["receipt_id"])
        notify = f.ledger.get(tenant.id, results[NOTIFY]["receipt_id"])
        held = f.orders_db
        after = scrape(f)
        compiled = wait_for(lambda: condition(f, reconcile.SHADOW_COMPILED), "the ShadowCompiled condition")
        ready = condition(f, "Ready")
        with f.client() as c:
            shown = c.get(f"/v1/receipts/{hold.id}").json()

    # The live policy decided and the tool ran, once; the shadow's BLOCK is only recorded.
    assert (hold.decision, hold.rule, hold.outcome) == ("ALLOW", "orders.hold", "applied")
    assert effects(held, HOLD) == 1
    assert hold.policy["shadow"] == {"decision": "BLOCK", "rule": "orders.hold.never",
                                     "policy_sha256": policies.source_sha256(STRICTER), "query": QUERY}
    assert hold.policy_sha256 == policies.source_sha256(LIVE)  # the receipt names the live policy
    assert shown["policy"]["shadow"]["decision"] == "BLOCK"  # the API shows it
    assert (notify.decision, notify.policy["shadow"]["decision"]) == ("ALERT", "ALERT")
    assert shadow_count(after, "ALLOW", "BLOCK") - shadow_count(before, "ALLOW", "BLOCK") == 1
    assert shadow_count(after, "ALERT", "ALERT") - shadow_count(before, "ALERT", "ALERT") == 1
    assert compiled["status"] == "True" and ready is not None and ready["status"] == "True"


def test_a_looser_shadow_does_not_run_what_the_live_policy_blocks(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path
) -> None:
    actions = [{"capability": "orders.cancel", "entity_key": "order:SO-10884",
                "idempotency_key": "ship-risk:SO-10884:cancel", "args": {}, "decision": "BLOCK"}]
    with running(state, tenant, tmp_path) as f:
        apply_policy(f, shadow={"rego": LOOSER})
        results = approve(f, f.propose(actions).id)
        refused = f.ledger.get(tenant.id, results["ship-risk:SO-10884:cancel"]["receipt_id"])
        applied = effects(f.orders_db)
    assert (refused.decision, refused.rule, refused.outcome) == ("BLOCK", "default-deny", "refused")
    assert refused.policy["shadow"]["decision"] == "ALLOW" and applied == 0


def test_shadows_that_fail_never_change_the_outcome(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path
) -> None:
    """A shadow that does not compile, is undefined or times out: recorded as failed; each runs once."""
    hold, notify = example_actions()
    other_hold = example_actions("order:SO-10886", "ship-risk:SO-10886")[0]  # the other open order
    cases = [("invalid", BROKEN, other_hold, "ALLOW"), ("undefined", UNDEFINED, notify, "ALERT"),
             ("timeout", RUNAWAY, hold, "ALLOW")]
    seen: dict[str, Any] = {}
    with running(state, tenant, tmp_path) as f:
        before = scrape(f)
        for label, rego, action, _ in cases:
            apply_policy(f, shadow={"rego": rego})
            if label == "invalid":  # apply takes it; the status says so, the live policy stays Ready
                seen["shadow-compiled"] = wait_for(
                    lambda: (c := condition(f, reconcile.SHADOW_COMPILED)) and c["status"] == "False" and c,
                    "ShadowCompiled False")
                seen["ready"] = condition(f, "Ready")
            started = time.monotonic()
            key = action["idempotency_key"]
            results = approve(f, f.propose([action]).id)
            seen[label] = (f.ledger.get(tenant.id, results[key]["receipt_id"]), effects(f.orders_db, key),
                           time.monotonic() - started)
        after = scrape(f)

    assert seen["ready"]["status"] == "True"
    assert "ship-risk-guard.shadow.rego:" in seen["shadow-compiled"]["message"]  # the candidate's line
    for label, _, _, live in cases:
        receipt, ran, _ = seen[label]
        assert (receipt.decision, receipt.outcome, ran) == (live, "applied", 1), label
        shadow = receipt.policy["shadow"]
        failure = "shadow-invalid" if label == "invalid" else label
        assert (shadow["decision"], shadow["failure"]) == ("BLOCK", failure), label
        assert shadow["rule"] == f"fail-closed:{failure}" and shadow["reasons"], label
    assert seen["timeout"][2] >= 5.0  # the shadow ran to the engine's budget and was cut there
    assert shadow_count(after, "ALLOW", "FAILED") - shadow_count(before, "ALLOW", "FAILED") == 2
    assert shadow_count(after, "ALERT", "FAILED") - shadow_count(before, "ALERT", "FAILED") == 1


def test_no_shadow_no_record(state: store.StateStore, tenant: store.Tenant, tmp_path: Path) -> None:
    with running(state, tenant, tmp_path) as f:
        apply_policy(f, shadow={"rego": LOOSER})
        apply_policy(f)  # promoted or dropped: shadow: removed from the spec
        results = approve(f, f.propose().id, {"only_actions": [HOLD]})
        hold = f.ledger.get(tenant.id, results[HOLD]["receipt_id"])
        gone = wait_for(lambda: condition(f, "Ready"), "the policy reconciled")
        conditions = f.state.get_object(tenant.id, "Policy", "ship-risk-guard").status["conditions"]
    assert "shadow" not in hold.policy and hold.decision == "ALLOW" and gone["status"] == "True"
    assert reconcile.SHADOW_COMPILED not in {c["type"] for c in conditions}


POLICY_YAML = """apiVersion: fibric.io/v1
kind: Policy
metadata:
  name: guard
spec:
  rego: |
    package guard
  shadow:
{shadow}
"""


@pytest.mark.parametrize(("shadow", "path", "line", "message"), [
    ("    rego: x\n    regoo: y", "spec.shadow.regoo", 10, "unknown field"),
    ("    query: data.guard.decision", "spec.shadow", 8, "set exactly one of 'rego' or 'rego_file'"),
    ("    rego: x\n    rego_file: x.rego", "spec.shadow", 8, "set exactly one of 'rego' or 'rego_file'"),
    ("    rego: x\n    query: guard.decision", "spec.shadow.query", 10, "should match pattern"),
])
def test_a_bad_shadow_names_the_field_and_line(shadow: str, path: str, line: int, message: str) -> None:
    with pytest.raises(errors.SpecInvalid) as caught:
        specs.load_text(POLICY_YAML.format(shadow=shadow), "policies.yaml")
    [problem] = caught.value.problems
    assert (problem.path, problem.file, problem.line) == (path, "policies.yaml", line)
    assert message in problem.message


def test_the_cli_inlines_the_shadows_rego_file(tmp_path: Path) -> None:
    (tmp_path / "candidate.rego").write_text(STRICTER)
    spec_file = tmp_path / "policies.yaml"
    spec_file.write_text(POLICY_YAML.format(shadow="    rego_file: candidate.rego"))
    [item] = specs.load_paths([spec_file])
    resolved = specs.resolve(item).document
    assert isinstance(resolved, specs.Policy) and resolved.spec.resolved
    assert resolved.spec_dict()["shadow"] == {"rego": STRICTER, "rego_file": None, "query": None}

    spec_file.write_text(POLICY_YAML.format(shadow="    rego_file: missing.rego"))
    [item] = specs.load_paths([spec_file])
    assert not item.document.spec.resolved  # type: ignore[attr-defined]
    with pytest.raises(errors.SpecInvalid) as caught:
        specs.resolve(item)
    [problem] = caught.value.problems
    assert (problem.path, problem.line) == ("spec.shadow.rego_file", 9) and "missing.rego" in problem.message


def test_only_the_executors_decisions_evaluate_the_shadow(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    """Plan previews (shadow=False) and Policies without a shadow evaluate the live policy alone."""
    text = f"""apiVersion: fibric.io/v1
kind: Operator
metadata: {{name: ship-risk}}
spec:
  capabilities: [orders.hold]
  policy: ship-risk-guard
---
{specs.to_yaml([policy_doc(LIVE, shadow={"rego": STRICTER})])}"""
    applier.apply(state, tenant.id, specs.load_text(text, "specs.yaml"))
    operator = state.get_object(tenant.id, "Operator", "ship-risk")
    doc = policies.build_input(tenant_id=tenant.id, operator={"id": operator.id, "name": "ship-risk"},
                               capability="orders.hold", entity_key="order:SO-10884", idempotency_key="k",
                               args={"reason": "late"})
    engine = policies.open_engine("embedded", timeout=5.0)
    try:
        decider = decide.Decider(state, engine)
        preview = decider.decide_recorded(tenant.id, operator, doc, shadow=False).decision
        assert (preview.decision.value, engine.stats.snapshot()["decisions"]) == ("ALLOW", 1)
        decided = decider.decide_recorded(tenant.id, operator, doc)
        assert decided.decision.decision.value == "ALLOW" and engine.stats.snapshot()["decisions"] == 3
        assert decided.shadow is not None and decided.shadow["decision"] == "BLOCK"

        applier.apply(state, tenant.id, specs.load_text(specs.to_yaml([policy_doc(LIVE)]), "specs.yaml"))
        plain = decider.decide_recorded(tenant.id, operator, doc)
        assert plain.shadow is None and engine.stats.snapshot()["decisions"] == 4
    finally:
        engine.close()


def test_apply_wants_the_shadows_file_inlined(state: store.StateStore, tenant: store.Tenant) -> None:
    [item] = specs.load_text(POLICY_YAML.format(shadow="    rego_file: candidate.rego"), "policies.yaml")
    with pytest.raises(errors.SpecInvalid) as caught:
        applier.apply(state, tenant.id, [item])
    [problem] = caught.value.problems
    assert (problem.path, problem.line) == ("spec.shadow.rego_file", 9)
    assert "inlined before apply" in problem.message
