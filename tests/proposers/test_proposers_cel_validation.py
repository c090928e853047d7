"""Invalid CEL is a spec error: the models, `check_rules`, `fibric validate` and apply all reject it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from proposer_support import spec

from fibric import errors, proposers, specs, store
from fibric.cli.root import cli
from fibric.specs import models

OPERATOR = """\
apiVersion: fibric.io/v1
kind: Operator
metadata:
  name: ship-risk
spec:
  capabilities: [orders.hold]
  policy: guard
  rules:
    - when: "event.data.status == 'open'"
      actions:
        - capability: orders.hold
          args: {reason: "late {{ event.data.days }} days"}
    - when: "event.data.status == "
      actions:
        - capability: orders.hold
          args: {reason: "{{ evnt.data.x }}"}
          entity_key: "order:{{ event.data.id"
"""
POLICY = """\
---
apiVersion: fibric.io/v1
kind: Policy
metadata: {name: guard}
spec:
  rego: |
    package fibric.guard
    default decision := {"decision": "BLOCK", "rule": "guard"}
"""


def test_validate_reports_each_bad_expression_at_file_line_column(tmp_path: Path) -> None:
    path = tmp_path / "ops.yaml"
    path.write_text(OPERATOR + POLICY, encoding="utf-8")

    result = CliRunner().invoke(cli, ["validate", "-f", str(path)])

    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert f"{path}:13:7: spec.rules[1].when: invalid CEL at expression 1:22: Syntax error:" in lines[0]
    assert lines[1] == (
        f"{path}:16:18: spec.rules[1].actions[0].args.reason: in template '{{{{ evnt.data.x }}}}': "
        "unknown variable 'evnt' in CEL expression 'evnt.data.x'; "
        "available: event, events, sensed, operator, now"
    )
    assert lines[2] == (
        f"{path}:17:11: spec.rules[1].actions[0].entity_key: "
        "unclosed '{{' in template 'order:{{ event.data.id'"
    )


def test_valid_rules_validate(tmp_path: Path) -> None:
    path = tmp_path / "ops.yaml"
    path.write_text(OPERATOR.split("    - when: \"event.data.status == \"")[0] + POLICY, encoding="utf-8")

    result = CliRunner().invoke(cli, ["validate", "-f", str(path)])

    assert result.exit_code == 0, result.output


def test_api_shaped_data_names_the_field() -> None:
    with pytest.raises(errors.SpecInvalid) as caught:
        specs.validate_data({
            "apiVersion": "fibric.io/v1", "kind": "Operator", "metadata": {"name": "x"},
            "spec": {"capabilities": ["a.b"], "policy": "p",
                     "rules": [{"when": "1 +", "actions": [{"capability": "a.b"}]}]},
        })

    [problem] = caught.value.problems
    assert problem.path == "spec.rules[0].when"
    assert problem.message.startswith("invalid CEL at expression 1:4:")


@pytest.mark.parametrize(("rule", "path", "message"), [
    ({"when": "", "actions": [{"capability": "orders.hold"}]}, ("rules", 0, "when"), "empty CEL expression"),
    ({"when": "true", "actions": [{"capability": "orders.hold", "args": {"a": ["ok", {"b": "{{ }}"}]}}]},
     ("rules", 0, "actions", 0, "args", "a", 1, "b"), "empty '{{ }}'"),
    ({"when": "true", "actions": [{"capability": "orders.hold", "idempotency_key": "{{ x }}"}]},
     ("rules", 0, "actions", 0, "idempotency_key"), "unknown variable 'x'"),
    ({"when": "events.exists(e, e.data.late) && [1].all(n, n > 0)",
      "actions": [{"capability": "orders.hold"}]},
     None, None),
])
def test_check_rules_lists_every_problem_with_its_path(
    rule: dict[str, object], path: tuple[str | int, ...] | None, message: str | None
) -> None:
    operator_spec = models.OperatorSpec.model_construct(
        capabilities=["orders.hold"], policy="guard", rules=[
            models.Rule.model_construct(
                when=rule["when"],
                actions=[models.RuleAction.model_construct(**{"args": {}, "entity_key": None,
                                                             "idempotency_key": None, **a})
                         for a in rule["actions"]],  # type: ignore[attr-defined]
            )
        ])

    problems = proposers.check_rules(operator_spec)

    if path is None:
        assert problems == []
    else:
        [(got_path, got_message)] = problems
        assert got_path == path
        assert message is not None and message in got_message


def test_validated_specs_have_no_rule_problems() -> None:
    assert proposers.check_rules(spec(rules=[{"when": "has(event.data.x)", "actions": [
        {"capability": "orders.hold", "args": {"r": "{{ event.data.x }}"}}]}])) == []


def test_api_apply_rejects_invalid_cel_naming_document_and_field(state: Any, tenant: Any) -> None:
    import warnings

    from fibric import settings
    from fibric.api import create_app

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from fastapi.testclient import TestClient

    class Controller:
        def notify(self, tenant_id: str, kind: str, name: str) -> None:
            raise AssertionError("nothing may be applied")

        async def start(self) -> None: ...

        async def stop(self) -> None: ...

    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    app = create_app(settings.Settings(), state, Controller())
    policy = {"apiVersion": "fibric.io/v1", "kind": "Policy", "metadata": {"name": "guard"},
              "spec": {"rego": "package fibric.guard\n"}}
    operator = {"apiVersion": "fibric.io/v1", "kind": "Operator", "metadata": {"name": "ship-risk"},
                "spec": {"capabilities": ["orders.hold"], "policy": "guard", "rules": [
                    {"when": "event.data.late == ", "actions": [{"capability": "orders.hold"}]}]}}
    with TestClient(app, headers={"Authorization": f"Bearer {secret}"}) as client:
        response = client.post("/v1/apply", json={"documents": [policy, operator]})
        listed = client.get("/v1/specs").json()["data"]

    assert response.status_code == 400, response.text
    [field] = response.json()["error"]["fields"]
    assert field["field"] == "documents[1].spec.rules[0].when"
    assert field["message"].startswith("invalid CEL at expression 1:20: Syntax error:")
    assert listed == []  # all or nothing
