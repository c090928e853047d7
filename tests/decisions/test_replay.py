"""`fibric policy replay` and POST /v1/policies/{id}/replay: a candidate judged on recorded decisions.

A real server on loopback with the example operator, policy and order system;
the candidate runs in the real embedded Rego engine. The property test
records decisions made live by the example policy and replays them unchanged.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from decisions_support import SHIP_RISK, Fibric, approve, running
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fibric import cli, policies, store
from fibric.controller import replay
from fibric.policies import masking
from fibric.store import receipt_store

HOLD, NOTIFY = "ship-risk:SO-10884:hold", "ship-risk:SO-10884:notify"
LOOSER = SHIP_RISK.read_text().replace('{"decision": "ALERT", "rule": "orders.notify"}',
                                       '{"decision": "ALLOW", "rule": "orders.notify"}')
# Seconds of CPU in constant memory (tests/policies/policy_support.py): never done within the budget.
RUNAWAY = ("package fibric.ship_risk\n\nimport rego.v1\n\n"
           'decision := {"decision": "ALLOW", "rule": sprintf("%d", [count({x |\n'
           "\tsome x in numbers.range(1, 3000)\n\tsome y in numbers.range(1, 3000)\n\tx == y\n})])}\n")
STRICTER = SHIP_RISK.read_text().replace('{"decision": "ALLOW", "rule": "orders.hold"}',
                                         '{"decision": "BLOCK", "rule": "orders.hold.never"}')


def fibric_cli(f: Fibric, *args: str) -> Result:
    env = {"FIBRIC_URL": f.url, "FIBRIC_KEY": f.key, "FIBRIC_DATA_DIR": None, "FIBRIC_STORE": None,
           "FIBRIC_TIMEOUT": None}
    return CliRunner().invoke(cli.cli, ["policy", "replay", *args], env=env, catch_exceptions=False)


def candidate(tmp_path: Path, source: str) -> str:
    path = tmp_path / f"candidate-{uuid.uuid4().hex[:6]}.rego"
    path.write_text(source)
    return str(path)


@pytest.fixture
def recorded(state: store.StateStore, tenant: store.Tenant, tmp_path: Path) -> Any:
    """The product with two decisions recorded (hold ALLOW, notify ALERT) and one older receipt without."""
    with running(state, tenant, tmp_path) as f:
        results = approve(f, f.propose(event_id=f.ingest().id).id)
        guard = state.get_object(tenant.id, "Policy", "ship-risk-guard")
        f.ledger.append(receipt_store.NewReceipt(  # as written before decision records were kept
            reseller_id=tenant.reseller_id, tenant_id=tenant.id, operator_id=f.operator_id(),
            operator="ship-risk", capability="orders.hold", entity_key="order:SO-1", idempotency_key="old:1",
            decision="ALLOW", outcome="applied", rule="orders.hold", policy_id=guard.id))
        yield f, results, guard


def test_a_loosening_candidate_is_reported_and_fails(recorded: Any, tmp_path: Path) -> None:
    f, results, _ = recorded
    result = fibric_cli(f, "-f", candidate(tmp_path, LOOSER), "--policy", "ship-risk-guard", "-o", "json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert (report["replayed"], report["skipped"], report["masked"]) == (2, 1, 0)
    assert report["transitions"] == [
        {"from": "ALERT", "to": "ALLOW", "count": 1, "loosens": True},
        {"from": "ALLOW", "to": "ALLOW", "count": 1, "loosens": False},
    ]
    assert (report["loosened"], report["decision_changes"], report["changed"]) == (1, 1, 1)
    assert report["rule_changes"] == {}
    assert report["by_operator"] == {"ship-risk": {"replayed": 2, "changed": 1, "loosened": 1}}
    assert report["by_capability"]["orders.notify"] == {"replayed": 1, "changed": 1, "loosened": 1}
    [change] = report["changes"]
    assert change["receipt_id"] == results[NOTIFY]["receipt_id"] and change["loosened"] is True
    assert (change["from"], change["to"]["decision"]) == ({"decision": "ALERT", "rule": "orders.notify"},
                                                         "ALLOW")
    assert report["changes_truncated"] is False
    assert "would loosen" in result.stderr

    text = fibric_cli(f, "-f", candidate(tmp_path, LOOSER), "--policy", "ship-risk-guard")
    assert text.exit_code == 1
    assert "ALERT -> ALLOW" in text.stdout and "LOOSER" in text.stdout
    assert "skipped: 1 receipts had no decision record" in text.stdout
    none = fibric_cli(f, "-f", candidate(tmp_path, LOOSER), "--policy", "ship-risk-guard",
                      "--fail-on", "none")
    assert none.exit_code == 0


def test_the_same_policy_changes_nothing_and_a_stricter_one_fails_only_on_any(
    recorded: Any, tmp_path: Path
) -> None:
    f, _, guard = recorded
    same = fibric_cli(f, "-f", str(SHIP_RISK), "--policy", guard.id, "--since", "1h", "-o", "json")
    assert same.exit_code == 0, same.output
    assert json.loads(same.stdout)["changed"] == 0
    stricter = candidate(tmp_path, STRICTER)
    loose = fibric_cli(f, "-f", stricter, "--policy", "ship-risk-guard", "-o", "json")
    assert loose.exit_code == 0, loose.output
    report = json.loads(loose.stdout)
    assert report["rule_changes"] == {"orders.hold->orders.hold.never": 1} and report["loosened"] == 0
    assert fibric_cli(f, "-f", stricter, "--policy", "ship-risk-guard", "--fail-on", "any").exit_code == 1
    only_other = fibric_cli(f, "-f", stricter, "--policy", "ship-risk-guard", "--operator", "ship-risk",
                            "--since", "2000-01-01T00:00:00Z", "-o", "json")
    assert json.loads(only_other.stdout)["replayed"] == 2


def test_bad_input_exits_2_and_another_tenants_policy_is_not_found(
    recorded: Any, tmp_path: Path, other_tenant: store.Tenant
) -> None:
    f, _, guard = recorded
    bad_rego = fibric_cli(f, "-f", candidate(tmp_path, "package x\n\ndecision := {"), "--policy", guard.id)
    assert bad_rego.exit_code == 2, bad_rego.output
    bad_since = fibric_cli(f, "-f", str(SHIP_RISK), "--policy", guard.id, "--since", "last week")
    assert bad_since.exit_code == 2 and "since" in bad_since.stderr
    missing = fibric_cli(f, "-f", str(tmp_path / "nope.rego"), "--policy", guard.id)
    assert missing.exit_code == 2 and "nope.rego" in missing.stderr
    _, other_key = f.state.create_api_key(other_tenant.id, frozenset(store.SCOPES))
    response = httpx.post(f"{f.url}/v1/policies/{guard.id}/replay", json={"rego": SHIP_RISK.read_text()},
                          headers={"Authorization": f"Bearer {other_key}"}, timeout=60.0)
    assert response.status_code == 404, response.text
    assert fibric_cli(f, "-f", str(SHIP_RISK), "--policy", "no-such-policy").exit_code == 1


def test_a_runaway_candidate_ends_the_replay_with_a_clear_error(recorded: Any, tmp_path: Path) -> None:
    f, _, guard = recorded
    result = fibric_cli(f, "-f", candidate(tmp_path, RUNAWAY), "--policy", guard.id)
    assert result.exit_code == 2, result.output
    assert "rego" in result.stderr and "did not decide 2 recorded inputs in time" in result.stderr


# --- replaying live decisions: the unchanged policy decides the same -------------------------

CAPABILITIES = ("orders.hold", "orders.notify", "orders.cancel")
inputs = st.fixed_dictionaries({
    "capability": st.sampled_from(CAPABILITIES),
    "notified": st.integers(0, 6),
    "plan_age": st.one_of(st.none(), st.integers(0, 3000)),
    "changed": st.one_of(st.none(), st.booleans()),
    "tool_changed": st.one_of(st.none(), st.booleans()),
    "reason": st.text(max_size=20),
    "mask": st.booleans(),
})


@pytest.fixture(scope="module")
def engine() -> Any:
    opened = policies.EmbeddedEngine(workers=1, timeout=5.0)
    yield opened
    opened.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cases=st.lists(inputs, min_size=1, max_size=30))
def test_replaying_live_decisions_with_the_same_policy_changes_none(
    state: store.StateStore, engine: policies.EmbeddedEngine, cases: list[dict[str, Any]]
) -> None:
    tenant = state.create_tenant(f"t-{uuid.uuid4().hex[:10]}", "rs_fibric")
    ledger = receipt_store.StoreLedger(state)
    policy = policies.compile(SHIP_RISK.read_text(), policy_id="pol_guard")
    live = []
    for n, case in enumerate(cases):
        doc = policies.build_input(
            tenant_id=tenant.id, operator={"id": "op_1", "name": "ship-risk", "labels": {}},
            capability=case["capability"], entity_key=f"order:{n}", idempotency_key=f"k{n}",
            args={"reason": case["reason"]},
            counts=policies.Counts(entity_capability=policies.Window(case["notified"], case["notified"])),
            plan_age_seconds=case["plan_age"], entity_changed_since_plan=case["changed"],
            tool_changed=case["tool_changed"])
        decided = policies.evaluate(engine, policy, doc)
        live.append(decided)
        ledger.append(receipt_store.NewReceipt(
            reseller_id="rs_fibric", tenant_id=tenant.id, operator_id="op_1", operator="ship-risk",
            capability=case["capability"], entity_key=f"order:{n}", idempotency_key=f"k{n}",
            decision=decided.decision.value, rule=decided.rule, policy_id="pol_guard",
            outcome="refused" if decided.decision.value == "BLOCK" else "applied",
            decision_input=masking.record(doc, ["/action/args/reason"] if case["mask"] else [])))
    report = replay.replay(ledger, engine, tenant.id, "pol_guard", policy)
    assert report.replayed == len(cases) and report.skipped == 0
    assert report.changed == 0 and report.changes == []
    assert report.masked == sum(c["mask"] for c in cases)
    recorded = {(d.decision.value, d.decision.value) for d in live}
    assert set(report.transitions) == recorded
    assert sum(report.transitions.values()) == len(cases)


def test_a_batch_decides_each_document_as_evaluate_does(engine: policies.EmbeddedEngine) -> None:
    policy = policies.compile(SHIP_RISK.read_text())
    notify = json.loads((SHIP_RISK.parent / "inputs" / "notify.json").read_text())
    flood = json.loads((SHIP_RISK.parent / "inputs" / "notify_flood.json").read_text())
    docs: list[Any] = [notify, {"action": {"args": {"x": float("nan")}}}, flood, {}]
    batch = policies.evaluate_many(engine, policy, docs)
    one_by_one = [policies.evaluate(engine, policy, d) for d in docs]
    assert [(d.decision, d.rule, d.reasons, d.failure) for d in batch] == [
        (d.decision, d.rule, d.reasons, d.failure) for d in one_by_one]
    assert [d.rule for d in batch] == ["orders.notify", "fail-closed:input-invalid", "orders.notify.cap",
                                       "default-deny"]
    assert policies.evaluate_many(engine, policy, []) == []
