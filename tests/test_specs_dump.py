"""YAML export (what `fibric export` prints re-applies unchanged) and the JSON Schema."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

from fibric import specs
from fibric.specs import models

ALL_KINDS = """\
apiVersion: fibric.io/v1
kind: Operator
metadata:
  name: ship-risk
  labels: {team: ops}
spec:
  capabilities: [orders.hold, orders.notify]
  policy: ship-risk-guard
  model: rules
  schedule: "*/15 * * * *"
  subscribes: [order.*]
  sense: [orders.read]
  lifecycle: paused
  rules:
    - when: "event.data.carrier_scanned == false && event.data.status == 'open'"
      actions:
        - capability: orders.hold
          args: {reason: "will miss ship-by date", n: 3, flags: [a, b], nested: {x: true}}
          entity_key: "{{ event.entity_key }}"
        - capability: orders.notify
          args: {to: owner}
---
apiVersion: fibric.io/v1
kind: Connector
metadata: {name: magento}
spec:
  display_name: Magento Orders
  kind: saas
  transport:
    stdio:
      command: python
      args: [examples/mcp/orders_server.py]
      env: {ORDERS_DB: .fibric/orders.db}
  capabilities:
    orders.read: orders.read
    orders.hold: orders.hold
---
apiVersion: fibric.io/v1
kind: Connector
metadata: {name: sensors}
spec:
  kind: hardware
  transport:
    http: {url: "http://127.0.0.1:9000/mcp", headers: {X-Site: "1"}}
  capabilities: {sensor.read: read}
---
apiVersion: fibric.io/v1
kind: Policy
metadata: {name: ship-risk-guard}
spec:
  rego: |
    package fibric.ship_risk

    default decision := {"decision": "BLOCK", "rule": "default-deny"}
  query: data.fibric.ship_risk.decision
  test_rego:
    - |
      package fibric.ship_risk_test
      test_x if true
---
apiVersion: fibric.io/v1
kind: Webhook
metadata: {name: ops-channel}
spec:
  url: https://acme.example/hooks/fibric
  events: [plan.proposed, receipt.created]
  description: "Route at-risk holds: ops channel"
  secret_env: OPS_HOOK_SECRET
  enabled: false
"""


def test_round_trip_gives_equal_documents() -> None:
    loaded = specs.load_text(ALL_KINDS, "all.yaml")

    text = specs.to_yaml([i.document for i in loaded])
    again = specs.load_text(text, "export.yaml")

    assert len(again) == len(loaded) == 5
    for before, after in zip(loaded, again, strict=True):
        assert after.document.kind == before.document.kind  # type: ignore[attr-defined]
        assert after.document.metadata == before.document.metadata
        assert after.document.spec_dict() == before.document.spec_dict()
        assert after.document == before.document


def test_dump_is_stable() -> None:
    docs = [i.document for i in specs.load_text(ALL_KINDS)]
    text = specs.to_yaml(docs)
    assert specs.to_yaml([i.document for i in specs.load_text(text)]) == text


def test_multi_line_rego_is_a_literal_block() -> None:
    docs = [i.document for i in specs.load_text(ALL_KINDS) if i.document.kind == "Policy"]  # type: ignore[attr-defined]

    text = specs.to_yaml(docs)

    assert (
        "  rego: |\n"
        "    package fibric.ship_risk\n"
        "\n"
        '    default decision := {"decision": "BLOCK", "rule": "default-deny"}\n'
    ) in text
    assert "  - |\n    package fibric.ship_risk_test\n    test_x if true\n" in text


def test_resolved_policy_round_trips(tmp_path: Path) -> None:
    rego = 'package fibric.p\n\nimport rego.v1\n\ndecision := {"decision": "ALLOW"} if true\n'
    (tmp_path / "p.rego").write_text(rego, encoding="utf-8")
    (tmp_path / "p.yaml").write_text(
        "apiVersion: fibric.io/v1\nkind: Policy\nmetadata: {name: p}\nspec: {rego_file: p.rego}\n",
        encoding="utf-8",
    )
    [item] = specs.load_paths([tmp_path / "p.yaml"])
    resolved = specs.resolve(item).document

    [again] = specs.load_text(specs.to_yaml([resolved]))

    assert isinstance(again.document, specs.Policy)
    assert again.document.spec.rego == rego
    assert again.document.spec.rego_file is None
    assert again.document.spec_dict() == resolved.spec_dict()


def test_document_data_leaves_defaults_out() -> None:
    text = (
        "apiVersion: fibric.io/v1\nkind: Operator\nmetadata: {name: op}\n"
        "spec: {capabilities: [a.b], policy: p, model: rules, lifecycle: active}\n"
    )
    [item] = specs.load_text(text)

    assert specs.document_data(item.document) == {
        "apiVersion": "fibric.io/v1",
        "kind": "Operator",
        "metadata": {"name": "op"},
        "spec": {"capabilities": ["a.b"], "policy": "p"},
    }


def test_to_yaml_takes_plain_data_too() -> None:
    data = {
        "apiVersion": "fibric.io/v1",
        "kind": "Webhook",
        "metadata": {"name": "w"},
        "spec": {"url": "https://x.example/h", "events": ["plan.executed"]},
    }
    text = specs.to_yaml([data, data])

    assert text.count("kind: Webhook") == 2
    assert [i.document.name for i in specs.load_text(text)] == ["w", "w"]


# --- JSON Schema ------------------------------------------------------------------


def resolve_ref(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].removeprefix("#/$defs/")]
    return node


def assert_shape(schema: dict[str, Any], node: dict[str, Any], data: dict[str, Any]) -> None:
    """Every key is a declared property and every required property is present, recursively."""
    node = resolve_ref(schema, node)
    properties = node["properties"]
    assert set(data) <= set(properties), set(data) - set(properties)
    assert set(node.get("required", [])) <= set(data)
    for key, value in data.items():
        child = resolve_ref(schema, properties[key])
        if isinstance(value, dict) and "properties" in child:
            assert_shape(schema, child, value)
        if "const" in child:
            assert value == child["const"]
        if "enum" in child:
            assert value in child["enum"]


def test_schema_is_one_of_the_four_kinds() -> None:
    schema = specs.json_schema()

    json.dumps(schema)  # serialisable as-is for `fibric schema`
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    refs = [item["$ref"] for item in schema["oneOf"]]
    assert sorted(refs) == sorted(f"#/$defs/{kind}" for kind in specs.KINDS)
    assert schema["discriminator"]["propertyName"] == "kind"
    for kind in specs.KINDS:
        definition = schema["$defs"][kind]
        assert definition["properties"]["apiVersion"]["const"] == "fibric.io/v1"
        assert definition["properties"]["kind"]["const"] == kind
        assert set(definition["required"]) == {"apiVersion", "kind", "metadata", "spec"}
        assert definition["additionalProperties"] is False


def test_schema_describes_example_documents() -> None:
    schema = specs.json_schema()
    for item in specs.load_text(ALL_KINDS):
        data = specs.document_data(item.document)
        assert_shape(schema, schema["$defs"][data["kind"]], data)


def test_schema_webhook_events_match_the_model() -> None:
    webhook = specs.json_schema()["$defs"]["WebhookSpec"]

    assert {"url", "events"} <= set(webhook["required"])
    assert tuple(webhook["properties"]["events"]["items"]["enum"]) == models.WEBHOOK_EVENTS
    assert typing.get_args(models.WebhookEvent) == models.WEBHOOK_EVENTS


def test_schema_operator_lifecycle_and_required_fields() -> None:
    operator = specs.json_schema()["$defs"]["OperatorSpec"]

    assert set(operator["required"]) == {"capabilities", "policy"}
    assert operator["properties"]["lifecycle"]["enum"] == ["active", "paused", "draft"]
    assert operator["additionalProperties"] is False
