"""The input document (docs/policies.md) and `fibric policy eval -f POLICY --input INPUT`."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import pytest
from policy_support import EXAMPLES, SHIP_RISK

from fibric import errors, policies
from fibric.policies import inputs as policies_inputs

NOW = dt.datetime(2026, 6, 14, 9, 2, 11, 250_000, tzinfo=dt.UTC)
EVENT = {"id": "ev_3a91c7", "type": "order.updated", "entity_key": "order:SO-10884",
         "data": {"status": "open", "carrier_scanned": False}}


def document(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "tenant_id": "t_8f2a",
        "operator": {"id": "op_8f2a1c", "name": "ship-risk", "labels": {"team": "ops"}},
        "capability": "orders.notify",
        "entity_key": "order:SO-10884",
        "idempotency_key": "ship-risk:SO-10884:notify",
        "args": {"to": "owner"},
        "event": EVENT,
        "plan_id": "pl_7c1a",
        "tool": {"connector": "cn_magento", "name": "orders.notify",
                 "annotations": {"readOnlyHint": False, "idempotentHint": False}},
        "counts": policies.Counts(entity_capability=policies.Window(last_hour=2, last_day=9)),
        "now": NOW,
    }
    arguments.update(overrides)
    return policies.build_input(**arguments)


def test_the_input_document_has_the_documented_shape() -> None:
    doc = document()

    assert doc == {
        "tenant": {"id": "t_8f2a"},
        "operator": {"id": "op_8f2a1c", "name": "ship-risk", "labels": {"team": "ops"}},
        "action": {"capability": "orders.notify", "entity_key": "order:SO-10884",
                   "idempotency_key": "ship-risk:SO-10884:notify", "args": {"to": "owner"}},
        "event": EVENT,
        "plan_id": "pl_7c1a",
        "tool": {"connector": "cn_magento", "name": "orders.notify",
                 "annotations": {"readOnlyHint": False, "idempotentHint": False}},
        "context": {
            "now": "2026-06-14T09:02:11Z",
            "now_ns": 1781427731250000000,
            "counts": {
                "entity": {"last_hour": 0, "last_day": 0},
                "operator": {"last_hour": 0, "last_day": 0},
                "capability": {"last_hour": 0, "last_day": 0},
                "entity_capability": {"last_hour": 2, "last_day": 9},
            },
        },
    }
    assert json.loads(json.dumps(doc)) == doc


def test_a_scheduled_run_has_no_event_and_no_plan() -> None:
    doc = document(event=None, plan_id=None, tool=None, args=None, counts=None)

    assert doc["event"] is None and doc["plan_id"] is None
    assert doc["tool"] == {"connector": None, "name": None, "annotations": {}}
    assert doc["action"]["args"] == {}
    assert doc["context"]["counts"]["entity"] == {"last_hour": 0, "last_day": 0}


def test_the_builder_refuses_what_json_cannot_carry() -> None:
    with pytest.raises(ValueError, match=r"input document: input\.action\.args\.x"):
        document(args={"x": math.nan})
    with pytest.raises(ValueError, match="timezone-aware"):
        document(now=dt.datetime(2026, 6, 14, 9, 0))


def test_the_example_policy_caps_notifications_from_built_input(engine: policies.Engine) -> None:
    policy = policies.compile(SHIP_RISK.read_text(encoding="utf-8"))

    def sent(n: int) -> str:
        counts = policies.Counts(entity_capability=policies.Window(last_hour=n, last_day=n))
        return policies.evaluate(engine, policy, document(counts=counts)).rule

    assert [sent(n) for n in (0, 1, 2, 3, 4, 657)] == ["orders.notify"] * 3 + ["orders.notify.cap"] * 3
    assert policies.evaluate(engine, policy, document(capability="orders.hold")).rule == "orders.hold"


@pytest.mark.parametrize(
    ("name", "decision", "rule"),
    [("hold", "ALLOW", "orders.hold"), ("notify", "ALERT", "orders.notify"),
     ("notify_flood", "BLOCK", "orders.notify.cap")],
)
def test_policy_eval_on_the_example_inputs(name: str, decision: str, rule: str) -> None:
    result = policies.eval_file(SHIP_RISK, EXAMPLES / "policies" / "inputs" / f"{name}.json")

    printed = result.to_dict()
    assert (printed["decision"], printed["rule"], printed["engine"]) == (decision, rule, "embedded")
    assert printed["policy_sha256"] == policies.source_sha256(SHIP_RISK.read_text(encoding="utf-8"))
    assert json.loads(json.dumps(printed)) == printed


def test_the_example_inputs_are_what_the_builder_makes() -> None:
    for path in sorted((EXAMPLES / "policies" / "inputs").glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        assert set(doc) == {"tenant", "operator", "action", "event", "plan_id", "tool", "context"}, path
        assert set(doc["context"]["counts"]) == {"entity", "operator", "capability", "entity_capability"}


def test_policy_eval_with_an_explicit_query(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text('package p\n\nverdict := {"decision": "ALERT", "rule": "r"}\n')
    (tmp_path / "in.json").write_text("{}")

    result = policies.eval_file(tmp_path / "p.rego", tmp_path / "in.json", query="data.p.verdict")

    assert (result.decision, result.rule) == (policies.Verdict.ALERT, "r")


def test_policy_eval_reports_bad_input_files_with_their_line(tmp_path: Path) -> None:
    (tmp_path / "in.json").write_text('{\n  "action": {\n    "capability": orders.hold\n  }\n}\n')
    (tmp_path / "list.json").write_text("[1]")

    with pytest.raises(errors.SpecInvalid) as caught:
        policies.eval_file(SHIP_RISK, tmp_path / "in.json")
    assert str(caught.value).startswith(f"{tmp_path / 'in.json'}:3:19: not valid JSON")
    with pytest.raises(errors.SpecInvalid, match="must be a JSON object, not list"):
        policies.eval_file(SHIP_RISK, tmp_path / "list.json")
    with pytest.raises(errors.SpecInvalid, match="cannot read"):
        policies.eval_file(SHIP_RISK, tmp_path / "missing.json")


def test_policy_eval_reports_bad_rego_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text("package p\n\ndecision := {\n")
    (tmp_path / "in.json").write_text("{}")

    with pytest.raises(errors.SpecInvalid, match=r"p\.rego:3:13: "):
        policies.eval_file(tmp_path / "p.rego", tmp_path / "in.json")


@pytest.mark.parametrize(
    ("body", "paths"),
    [
        ("x := input.action.capability\ny := input.action.capability", (("action", "capability"),)),
        ("x := input.action.args[k]\ny := input.context.counts", (("action", "args"), ("context", "counts"))),
        ("x := count(input.action)\ny := input.action.args.to", (("action",), ("action", "args", "to"))),
        ('x := "input.secret" # input.other', ()),
        ("x := input", None),
        ("x := object.get(input, \"a\", 1)", None),
        ("x := input[\"action\"]", None),
        ("import input.action as a\nx := a.capability", (("action",),)),
    ],
)
def test_the_compiler_knows_which_input_a_policy_can_read(body: str, paths: Any) -> None:
    policy = policies.compile(f"package p\n\nimport rego.v1\n\n{body}\n", query="data.p.x")

    assert policy.input_paths == paths


def test_pruning_keeps_exactly_the_readable_parts() -> None:
    doc = document()

    kept = policies_inputs.prune(doc, (("action", "capability"), ("context", "counts", "entity_capability"),
                                      ("event", "data", "status", "deeper"), ("missing", "x")))

    assert kept == {
        "action": {"capability": "orders.notify"},
        "context": {"counts": {"entity_capability": {"last_hour": 2, "last_day": 9}}},
        "event": {"data": {"status": "open"}},  # a scalar where the path goes deeper is kept whole
    }
    assert policies_inputs.prune(doc, None) is doc


def test_invalid_json_the_policy_never_reads_still_blocks(embedded: policies.EmbeddedEngine) -> None:
    """The embedded engine prunes the input, but validates all of it, exactly like the OPA engine."""
    policy = policies.compile(SHIP_RISK.read_text(encoding="utf-8"))
    doc = document()
    doc["event"] = {"data": {"weight": math.inf}}

    decision = policies.evaluate(embedded, policy, doc)

    assert decision.rule == "fail-closed:input-invalid"
