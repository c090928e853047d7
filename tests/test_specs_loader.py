"""Loading specs from YAML: what `fibric validate` reports, located at file:line:column."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from fibric import errors, specs

OPERATOR = """\
apiVersion: fibric.io/v1
kind: Operator
metadata:
  name: ship-risk
spec:
  capabilities: [orders.hold, orders.notify]
  policy: ship-risk-guard
  schedule: "*/15 * * * *"
  subscribes: [order.updated]
  rules:
    - when: "event.data.status == 'open'"
      actions:
        - capability: orders.hold
          args: {reason: will miss ship-by date}
"""

CONNECTOR = """\
apiVersion: fibric.io/v1
kind: Connector
metadata: {name: magento}
spec:
  display_name: Magento Orders
  transport:
    stdio: {command: python, args: [orders_server.py]}
  capabilities:
    orders.hold: orders.hold
"""

POLICY = """\
apiVersion: fibric.io/v1
kind: Policy
metadata: {name: ship-risk-guard}
spec:
  rego: |
    package fibric.ship_risk
    default decision := {"decision": "BLOCK", "rule": "default-deny"}
"""

WEBHOOK = """\
apiVersion: fibric.io/v1
kind: Webhook
metadata: {name: ops-channel}
spec:
  url: https://acme.example/hooks/fibric
  events: [plan.proposed]
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dedent(text), encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    """The problems `load_paths` reports for one file, as the CLI prints them."""
    with pytest.raises(errors.SpecInvalid) as e:
        specs.load_paths([path])
    return [str(p) for p in e.value.problems]


def only_problem(tmp_path: Path, text: str) -> tuple[Path, str]:
    path = write(tmp_path / "spec.yaml", text)
    found = problems(path)
    assert len(found) == 1, found
    return path, found[0]


# --- loading --------------------------------------------------------------------


def test_load_single_file(tmp_path: Path) -> None:
    path = write(tmp_path / "operators.yaml", OPERATOR)

    [item] = specs.load_paths([path])

    assert isinstance(item.document, specs.Operator)
    assert item.document.name == "ship-risk"
    assert item.document.spec.capabilities == ["orders.hold", "orders.notify"]
    assert item.document.spec.model == "rules"  # default
    assert item.document.spec.lifecycle == "active"  # default
    assert item.source.file == str(path)
    assert item.source.line == 1


def test_load_several_files_keeps_their_order(tmp_path: Path) -> None:
    ops = write(tmp_path / "b.yaml", OPERATOR)
    pol = write(tmp_path / "a.yaml", POLICY)

    loaded = specs.load_paths([ops, pol])

    assert [(i.document.kind, i.source.file) for i in loaded] == [
        ("Operator", str(ops)),
        ("Policy", str(pol)),
    ]


def test_load_folder_of_multi_document_files(tmp_path: Path) -> None:
    folder = tmp_path / "specs"
    write(folder / "a.yaml", "---\n" + OPERATOR + "---\n---\n# only a comment\n---\n" + POLICY)
    write(folder / "nested" / "b.yml", CONNECTOR + "---\n" + WEBHOOK + "---\n")
    write(folder / "README.md", "not: [a spec")  # not YAML by suffix: ignored

    loaded = specs.load_paths([folder])

    assert [(i.document.kind, i.document.name) for i in loaded] == [
        ("Operator", "ship-risk"),
        ("Policy", "ship-risk-guard"),
        ("Connector", "magento"),
        ("Webhook", "ops-channel"),
    ]
    assert [i.source.file for i in loaded] == [str(folder / "a.yaml")] * 2 + [
        str(folder / "nested" / "b.yml")
    ] * 2
    # The line of each document's first key, so later checks can point back at it.
    assert [i.source.line for i in loaded] == [2, 20, 1, 11]


def test_empty_file_loads_nothing(tmp_path: Path) -> None:
    assert specs.load_paths([write(tmp_path / "empty.yaml", "---\n---\n")]) == []


def test_load_text_names_the_given_file() -> None:
    [item] = specs.load_text(WEBHOOK, "hooks.yaml")
    assert item.source.file == "hooks.yaml"
    assert isinstance(item.document, specs.Webhook)
    assert item.document.spec.enabled is True


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(errors.SpecInvalid) as e:
        specs.load_paths([missing])
    assert str(e.value) == f"no such file or folder: {missing}"


def test_problems_in_several_files_are_reported_together(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", OPERATOR.replace("name: ship-risk", "name: Ship"))
    b = write(tmp_path / "b.yaml", WEBHOOK.replace("plan.proposed", "plan.nope"))

    with pytest.raises(errors.SpecInvalid) as e:
        specs.load_paths([tmp_path])

    found = [str(p) for p in e.value.problems]
    assert [f.split(": ")[0:2] for f in found] == [
        [f"{a}:4:3", "metadata.name"],
        [f"{b}:6:12", "spec.events[0]"],
    ]


def test_every_invalid_document_in_a_file_is_reported(tmp_path: Path) -> None:
    text = OPERATOR.replace("policy: ship-risk-guard", "policy: Bad") + "---\n" + WEBHOOK.replace(
        "url: https", "url: ftp"
    )
    path = write(tmp_path / "spec.yaml", text)

    assert [p.split(": ")[0] for p in problems(path)] == [f"{path}:7:3", f"{path}:20:3"]


# --- errors: file:line:column: field.path: message ------------------------------------


def test_malformed_yaml_points_at_the_parse_error(tmp_path: Path) -> None:
    path, problem = only_problem(
        tmp_path,
        """\
        apiVersion: fibric.io/v1
        kind: Operator
        metadata: {name: ok
        spec: {}
        """,
    )
    assert problem.startswith(f"{path}:4:5: invalid YAML: ")


def test_malformed_yaml_in_a_later_document(tmp_path: Path) -> None:
    path, problem = only_problem(tmp_path, WEBHOOK + "---\nkind: 'unterminated\n")
    assert problem.startswith(f"{path}:9:1: invalid YAML: ")


def test_unknown_kind(tmp_path: Path) -> None:
    path, problem = only_problem(tmp_path, OPERATOR.replace("kind: Operator", "kind: Operatr"))
    assert problem == (
        f"{path}:2:1: kind: unknown kind 'Operatr'; "
        "expected one of: Operator, Connector, Policy, Webhook"
    )


def test_missing_kind(tmp_path: Path) -> None:
    path, problem = only_problem(tmp_path, OPERATOR.replace("kind: Operator\n", ""))
    assert problem == f"{path}:1:1: missing 'kind'"


def test_wrong_api_version(tmp_path: Path) -> None:
    path, problem = only_problem(tmp_path, OPERATOR.replace("fibric.io/v1", "fibric.io/v2"))
    assert problem == f"{path}:1:1: apiVersion: Input should be 'fibric.io/v1'"


def test_document_must_be_a_mapping(tmp_path: Path) -> None:
    path, problem = only_problem(tmp_path, WEBHOOK + "---\n- a\n- b\n")
    assert problem == (
        f"{path}:8:1: a document must be a mapping with apiVersion, kind, metadata and spec"
    )


def test_unknown_field_is_reported_at_the_unknown_key(tmp_path: Path) -> None:
    path, problem = only_problem(
        tmp_path, OPERATOR.replace("  subscribes:", "  subscribe_to: [x]\n  subscribes:")
    )
    assert problem == f"{path}:9:3: spec.subscribe_to: unknown field; did you mean 'subscribes'?"


def test_unknown_field_nested_in_a_list(tmp_path: Path) -> None:
    path, problem = only_problem(tmp_path, OPERATOR.replace("          args:", "          arg:"))
    assert problem == f"{path}:14:11: spec.rules[0].actions[0].arg: unknown field; did you mean 'args'?"


def test_unknown_top_level_field(tmp_path: Path) -> None:
    path, problem = only_problem(tmp_path, OPERATOR + "status: {}\n")
    assert problem == f"{path}:15:1: status: unknown field"


def test_wrong_type(tmp_path: Path) -> None:
    path, problem = only_problem(
        tmp_path, OPERATOR.replace("[orders.hold, orders.notify]", "orders.hold")
    )
    assert problem == f"{path}:6:3: spec.capabilities: Input should be a valid list"


def test_wrong_type_in_a_flow_mapping(tmp_path: Path) -> None:
    path, problem = only_problem(tmp_path, WEBHOOK + "  enabled: maybe\n")
    assert problem == (
        f"{path}:7:3: spec.enabled: Input should be a valid boolean, unable to interpret input"
    )


def test_bad_list_item_is_located_at_the_item(tmp_path: Path) -> None:
    path, problem = only_problem(tmp_path, OPERATOR.replace("orders.notify]", "Orders.Notify]"))
    assert problem.startswith(f"{path}:6:31: spec.capabilities[1]: String should match pattern")


def test_missing_required_field(tmp_path: Path) -> None:
    path, problem = only_problem(tmp_path, OPERATOR.replace("  policy: ship-risk-guard\n", ""))
    # A missing key has no position of its own: the error points at its parent.
    assert problem == f"{path}:5:1: spec.policy: field required"


def test_missing_spec(tmp_path: Path) -> None:
    path, problem = only_problem(tmp_path, "apiVersion: fibric.io/v1\nkind: Webhook\nmetadata: {name: a}\n")
    assert problem == f"{path}:1:1: spec: field required"


@pytest.mark.parametrize("name", ["Ship-Risk", "ship_risk", "-ship", "ship-", "a" * 64])
def test_bad_slug_name(tmp_path: Path, name: str) -> None:
    path, problem = only_problem(tmp_path, OPERATOR.replace("name: ship-risk", f"name: {name}"))
    assert problem.startswith(f"{path}:4:3: metadata.name: ")


@pytest.mark.parametrize("name", ["a", "ship-risk", "a1-b2", "a" * 63])
def test_good_slug_name(tmp_path: Path, name: str) -> None:
    [item] = specs.load_text(OPERATOR.replace("name: ship-risk", f"name: {name}"))
    assert item.document.name == name


def test_labels_with_the_reserved_prefix_are_rejected(tmp_path: Path) -> None:
    text = OPERATOR.replace(
        "  name: ship-risk\n",
        "  name: ship-risk\n  labels:\n    team: ops\n    fibric.io/apply-set: prod\n",
    )
    path, problem = only_problem(tmp_path, text)
    assert problem == (
        f"{path}:5:3: metadata.labels: label 'fibric.io/apply-set': "
        "the 'fibric.io/' prefix is reserved"
    )


def test_ordinary_labels_are_kept() -> None:
    text = OPERATOR.replace(
        "  name: ship-risk\n", "  name: ship-risk\n  labels: {team: ops, acme.com/tier: gold}\n"
    )
    [item] = specs.load_text(text)
    assert item.document.metadata.labels == {"team": "ops", "acme.com/tier": "gold"}


@pytest.mark.parametrize(
    "transport",
    [
        "transport: {}",
        "transport:\n    stdio: {command: x}\n    http: {url: 'https://mcp.example/mcp'}",
    ],
)
def test_connector_transport_needs_exactly_one_of_catalog_stdio_or_http(
    tmp_path: Path, transport: str
) -> None:
    text = CONNECTOR.replace("transport:\n    stdio: {command: python, args: [orders_server.py]}",
                             transport)
    path, problem = only_problem(tmp_path, text)
    assert problem == f"{path}:6:3: spec.transport: set exactly one of 'catalog', 'stdio' or 'http'"


def test_connector_http_transport() -> None:
    text = CONNECTOR.replace(
        "stdio: {command: python, args: [orders_server.py]}",
        "http: {url: 'http://127.0.0.1:9000/mcp', bearer_token_env: MCP_TOKEN}",
    )
    [item] = specs.load_text(text)
    assert isinstance(item.document, specs.Connector)
    transport = item.document.spec.transport
    assert transport.stdio is None
    assert transport.http is not None
    assert transport.http.bearer_token_env == "MCP_TOKEN"


@pytest.mark.parametrize(
    "source", ["query: data.fibric.x.decision", "rego: 'package x'\n  rego_file: x.rego"]
)
def test_policy_needs_exactly_one_of_rego_or_rego_file(tmp_path: Path, source: str) -> None:
    text = "apiVersion: fibric.io/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  " + source + "\n"
    path, problem = only_problem(tmp_path, text)
    assert problem == f"{path}:4:1: spec: set exactly one of 'rego' or 'rego_file'"


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("'* * *'", "cron expression must have 5 fields, got 3"),
        ("'* * * * * *'", "cron expression must have 5 fields, got 6"),
        ("'* * * * x!'", "'* * * * x!' is not a cron expression"),
    ],
)
def test_cron_schedule_shape(tmp_path: Path, schedule: str, message: str) -> None:
    path, problem = only_problem(
        tmp_path, OPERATOR.replace('schedule: "*/15 * * * *"', f"schedule: {schedule}")
    )
    assert problem == f"{path}:8:3: spec.schedule: {message}"


@pytest.mark.parametrize("schedule", ["*/15 * * * *", "0 9 * * MON-FRI", "0,30 8-18 1 1-6 *"])
def test_good_cron_schedules(schedule: str) -> None:
    [item] = specs.load_text(OPERATOR.replace("*/15 * * * *", schedule))
    assert item.document.spec.schedule == schedule


def test_rule_actions_must_use_the_operators_own_capabilities(tmp_path: Path) -> None:
    path, problem = only_problem(
        tmp_path, OPERATOR.replace("- capability: orders.hold", "- capability: orders.cancel")
    )
    assert problem == (
        f"{path}:13:11: spec.rules[0].actions[0].capability: "
        "'orders.cancel' is not in spec.capabilities"
    )


def test_capability_listed_twice(tmp_path: Path) -> None:
    path, problem = only_problem(tmp_path, OPERATOR.replace("orders.notify]", "orders.hold]"))
    assert problem == f"{path}:6:3: spec.capabilities: 'orders.hold' is listed twice"


def test_unknown_webhook_event(tmp_path: Path) -> None:
    path, problem = only_problem(tmp_path, WEBHOOK.replace("[plan.proposed]", "[plan.proposed, x.y]"))
    assert problem == (
        f"{path}:6:27: spec.events[1]: Input should be 'plan.proposed', 'plan.executed', "
        "'action.disposed', 'receipt.created', 'plan.rejected', 'plan.expired' or 'run.failed'"
    )


def test_several_problems_in_one_document(tmp_path: Path) -> None:
    text = OPERATOR.replace("name: ship-risk", "name: Bad").replace("policy:", "bogus: 1\n  policy:")
    path = write(tmp_path / "spec.yaml", text)
    assert sorted(p.split(": ", 2)[1] for p in problems(path)) == ["metadata.name", "spec.bogus"]


def test_validate_data_names_the_field_without_a_file() -> None:
    with pytest.raises(errors.SpecInvalid) as e:
        specs.validate_data(
            {
                "apiVersion": "fibric.io/v1",
                "kind": "Webhook",
                "metadata": {"name": "hook"},
                "spec": {"url": "https://x.example", "events": ["nope"]},
            }
        )
    assert str(e.value).startswith("spec.events[0]: Input should be 'plan.proposed'")


def test_format_path() -> None:
    assert specs.format_path(("spec", "rules", 0, "actions", 1, "capability")) == (
        "spec.rules[0].actions[1].capability"
    )
    assert specs.format_path(()) == ""


# --- inline_files.resolve: rego_file and tests, relative to the spec file -----------------------


POLICY_FILES = """\
apiVersion: fibric.io/v1
kind: Policy
metadata: {name: ship-risk-guard}
spec:
  rego_file: ../policies/ship_risk.rego
  query: data.fibric.ship_risk.decision
  tests:
    - ../policies/ship_risk_test.rego
    - ../policies/more_test.rego
"""


def policy_repo(tmp_path: Path) -> Path:
    write(tmp_path / "repo" / "policies" / "ship_risk.rego", "package fibric.ship_risk\n")
    write(tmp_path / "repo" / "policies" / "ship_risk_test.rego", "package t1\n")
    write(tmp_path / "repo" / "policies" / "more_test.rego", "package t2\n")
    return write(tmp_path / "repo" / "specs" / "policies.yaml", POLICY_FILES)


def test_resolve_inlines_files_relative_to_the_spec_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec_file = policy_repo(tmp_path)
    monkeypatch.chdir(tmp_path)  # not the spec file's folder
    [item] = specs.load_paths([spec_file])
    assert isinstance(item.document, specs.Policy)
    assert not item.document.spec.resolved

    resolved = specs.resolve(item)

    assert isinstance(resolved.document, specs.Policy)
    spec = resolved.document.spec
    assert spec.resolved
    assert spec.rego == "package fibric.ship_risk\n"
    assert spec.rego_file is None
    assert spec.tests == []
    assert spec.test_rego == ["package t1\n", "package t2\n"]
    assert spec.query == "data.fibric.ship_risk.decision"
    assert resolved.source == item.source
    assert resolved.document.metadata == item.document.metadata


def test_resolve_keeps_inline_tests_and_appends_files(tmp_path: Path) -> None:
    write(tmp_path / "t.rego", "package t\n")
    spec_file = write(
        tmp_path / "p.yaml",
        POLICY.replace("spec:\n", "spec:\n  test_rego: ['package inline']\n  tests: [t.rego]\n"),
    )
    [item] = specs.load_paths([spec_file])

    resolved = specs.resolve(item)

    assert isinstance(resolved.document, specs.Policy)
    assert resolved.document.spec.rego == item.document.spec.rego  # type: ignore[attr-defined]
    assert resolved.document.spec.test_rego == ["package inline", "package t\n"]


def test_resolve_leaves_other_documents_alone() -> None:
    for text in (OPERATOR, CONNECTOR, WEBHOOK, POLICY):
        [item] = specs.load_text(text)
        assert specs.resolve(item) is item


def test_resolve_missing_rego_file_names_the_spec_file_and_field(tmp_path: Path) -> None:
    spec_file = policy_repo(tmp_path)
    (tmp_path / "repo" / "policies" / "ship_risk.rego").unlink()
    [item] = specs.load_paths([spec_file])

    with pytest.raises(errors.SpecInvalid) as e:
        specs.resolve(item)

    [problem] = e.value.problems
    target = spec_file.parent / "../policies/ship_risk.rego"
    assert str(problem) == (
        f"{spec_file}:5:3: spec.rego_file: cannot read '{target}': No such file or directory"
    )


def test_resolve_reports_every_missing_file(tmp_path: Path) -> None:
    spec_file = policy_repo(tmp_path)
    (tmp_path / "repo" / "policies" / "ship_risk.rego").unlink()
    (tmp_path / "repo" / "policies" / "more_test.rego").unlink()
    [item] = specs.load_paths([spec_file])

    with pytest.raises(errors.SpecInvalid) as e:
        specs.resolve(item)

    assert [str(p).split(": cannot read")[0] for p in e.value.problems] == [
        f"{spec_file}:5:3: spec.rego_file",
        f"{spec_file}:9:7: spec.tests[1]",
    ]
