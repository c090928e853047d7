"""`fibric validate` catches offline what apply or the first decision would refuse (issue 20).

Each test writes real spec and Rego files, runs the real CLI on them and reads
what a user reads: the file:line of the problem, the name probably meant, and
the exit code.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fibric import cli

REGO = """\
package fibric.incident

import rego.v1

default decision := {"decision": "BLOCK", "rule": "default-deny"}

decision := {"decision": "ALLOW", "rule": "hold"} if {
\tinput.action.capability == "orders.hold"
\tnot tool_changed
}

tool_changed if input.context.tool_changed
"""

POLICY = """\
apiVersion: fibric.io/v1
kind: Policy
metadata:
  name: incident
spec:
  rego_file: incident.rego
  query: data.fibric.incident.decision
"""

OPERATOR = """\
apiVersion: fibric.io/v1
kind: Operator
metadata:
  name: triage
spec:
  capabilities: [orders.hold]
  policy: incident
  model: rules
"""

CONNECTOR = """\
apiVersion: fibric.io/v1
kind: Connector
metadata:
  name: orders
spec:
  transport:
    catalog: orders
  capabilities:
    orders.hold: orders.hold
"""

WEBHOOK = """\
apiVersion: fibric.io/v1
kind: Webhook
metadata:
  name: ops
spec:
  url: https://hooks.example/fibric
  events: [plan.proposed]
"""


def validate(*args: str) -> Result:
    env: dict[str, str | None] = {"FIBRIC_URL": None, "FIBRIC_KEY": None, "FIBRIC_LLM_ROUTES_FILE": None}
    return CliRunner().invoke(cli.cli, ["validate", *args], env=env, catch_exceptions=False)


def line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A spec folder whose files validate clean together."""
    specs = tmp_path / "specs"
    specs.mkdir()
    for name, text in {"incident.rego": REGO, "policy.yaml": POLICY, "operator.yaml": OPERATOR,
                       "connector.yaml": CONNECTOR, "webhook.yaml": WEBHOOK}.items():
        (specs / name).write_text(text)
    return specs


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_the_folder_is_valid(folder: Path) -> None:
    result = validate("-f", str(folder))
    assert result.exit_code == 0, result.output
    assert "4 documents in 4 files: valid" in result.stdout
    assert result.stderr == ""


def test_the_examples_are_valid() -> None:
    examples = Path(__file__).parents[2] / "examples" / "specs"
    result = validate("-f", str(examples))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


def test_a_query_naming_no_rule_is_reported_at_the_query_with_the_closest_rule(folder: Path) -> None:
    policy = folder / "policy.yaml"
    edit(policy, "incident.decision", "incident.decsion")

    result = validate("-f", str(folder))

    assert result.exit_code == 2
    line = line_of(policy, "query:")
    assert (f"{policy}:{line}:3: spec.query: query 'data.fibric.incident.decsion' names rule 'decsion', "
            "which the Rego does not define; did you mean 'decision'?") in result.stderr.splitlines()
    assert "Traceback" not in result.output


def test_a_missing_default_decision_rule_is_reported(folder: Path) -> None:
    policy = folder / "policy.yaml"
    edit(policy, "  query: data.fibric.incident.decision\n", "")
    rego = folder / "incident.rego"
    rego.write_text(REGO.replace("default decision :=", "default decisions :=")
                    .replace("\ndecision :=", "\ndecisions :="))

    result = validate("-f", str(folder))

    assert result.exit_code == 2
    line = line_of(policy, "rego_file:")
    assert (f"{policy}:{line}:3: spec.rego_file: the default query 'data.fibric.incident.decision' names "
            "rule 'decision', which the Rego does not define; did you mean 'decisions'?") in result.stderr


def test_a_misspelt_input_field_is_reported_at_its_rego_line(folder: Path) -> None:
    rego = folder / "incident.rego"
    edit(rego, "input.action.capability", "input.actoin.capability")
    edit(rego, "input.context.tool_changed", "input.context.tool_chnaged")

    result = validate("-f", str(folder))

    assert result.exit_code == 2
    policy = folder / "policy.yaml"
    spec_line = line_of(policy, "rego_file:")
    lines = result.stderr.splitlines()
    assert (f"{policy}:{spec_line}:3: spec.rego_file: {rego}:{line_of(rego, 'input.actoin')}:2: "
            "'input.actoin' is not in the input document (docs/policies.md); did you mean 'action'?") in lines
    column = line_of(rego, "tool_chnaged")
    assert any(f"{rego}:{column}:" in line and "'input.context.tool_chnaged' is not in the input document"
               in line and "did you mean 'tool_changed'?" in line for line in lines), lines
    assert lines[-1] == "Error: 2 problems found"


def test_fields_below_open_objects_are_not_checked(folder: Path) -> None:
    rego = folder / "incident.rego"
    edit(rego, 'input.action.capability == "orders.hold"',
         'input.action.capability == "orders.hold"\n\tinput.action.args.reason != ""\n'
         '\tinput.event.data.carrier_scanned == false\n\tinput.operator.labels.team == "ops"')
    result = validate("-f", str(folder))
    assert result.exit_code == 0, result.output


def test_a_name_nothing_defines_is_reported_like_opa_strict(folder: Path) -> None:
    rego = folder / "incident.rego"
    edit(rego, "not tool_changed\n", "not tool_chnaged\n")

    result = validate("-f", str(folder))

    assert result.exit_code == 2
    line = line_of(rego, "not tool_chnaged")
    assert (f"{rego}:{line}:6: 'tool_chnaged' is not defined: no rule, import or variable of this name; "
            "did you mean 'tool_changed'?") in result.stderr


def test_rego_that_does_not_compile_names_its_file_and_line(folder: Path) -> None:
    rego = folder / "incident.rego"
    edit(rego, "tool_changed if input.context.tool_changed", "tool_changed if {")
    result = validate("-f", str(folder))
    assert result.exit_code == 2
    assert f"spec.rego_file: {rego}:" in result.stderr


@pytest.mark.parametrize(("old", "new", "expected"), [
    ('{"decision": "ALLOW", "rule": "hold"}', '{"decision": "allow", "rule": "hold"}',
     "decision 'allow' is not one of ALLOW, ALERT, BLOCK (exactly these strings): every action it decides "
     "is BLOCK (fail-closed:unknown-decision)"),
    ('{"decision": "ALLOW", "rule": "hold"}', '{"decision": "ALLOW"}',
     "the decision object has no 'rule' key: every action it decides is BLOCK (fail-closed:malformed)"),
    ('{"decision": "ALLOW", "rule": "hold"}', '"ALLOW"',
     "'decision' is a string, not an object with decision and rule: every action it decides is BLOCK "
     "(fail-closed:not-an-object)"),
])
def test_a_decision_of_the_wrong_shape_is_reported_at_its_rego_line(
        folder: Path, old: str, new: str, expected: str) -> None:
    rego = folder / "incident.rego"
    edit(rego, old, new)

    result = validate("-f", str(folder))

    assert result.exit_code == 2
    line = line_of(rego, new)
    assert f"spec.rego_file: {rego}:{line}:13: {expected}" in result.stderr, result.stderr


def test_a_decision_built_from_variables_is_left_to_the_tests(folder: Path) -> None:
    rego = folder / "incident.rego"
    edit(rego, '{"decision": "ALLOW", "rule": "hold"}',
         'object.union({"decision": "ALLOW"}, {"rule": "hold"})')
    result = validate("-f", str(folder))
    assert result.exit_code == 0, result.output


SHADOW = """  shadow:
    rego_file: candidate.rego
"""


def test_the_shadow_candidate_is_compiled_and_checked_like_the_live_policy(folder: Path) -> None:
    policy = folder / "policy.yaml"
    policy.write_text(POLICY + SHADOW)
    candidate = folder / "candidate.rego"
    candidate.write_text(REGO)
    assert validate("-f", str(folder)).exit_code == 0

    edit(candidate, "input.action.capability", "input.actoin.capability")
    result = validate("-f", str(folder))
    assert result.exit_code == 2
    assert (f"{policy}:{line_of(policy, 'rego_file: candidate')}:5: spec.shadow.rego_file: "
            f"{candidate}:{line_of(candidate, 'input.actoin')}:2: 'input.actoin' is not in the input "
            "document") in result.stderr, result.stderr

    edit(candidate, "tool_changed if input.context.tool_changed", "tool_changed if {")
    result = validate("-f", str(folder))
    assert result.exit_code == 2
    assert f"spec.shadow.rego_file: {candidate}:" in result.stderr, result.stderr
    assert "Traceback" not in result.output


def test_a_webhook_url_apply_refuses_is_refused_by_validate(folder: Path) -> None:
    webhook = folder / "webhook.yaml"
    edit(webhook, "https://hooks.example/fibric", "http://hooks.example/fibric")

    result = validate("-f", str(folder))

    assert result.exit_code == 2
    line = line_of(webhook, "url:")
    assert (f"{webhook}:{line}:3: spec.url: URL refused: must be an https:// URL (http:// only to hosts on "
            "the egress allowlist)") in result.stderr


def test_a_private_address_and_a_server_variable_are_refused(folder: Path) -> None:
    webhook = folder / "webhook.yaml"
    edit(webhook, "https://hooks.example/fibric", "https://10.0.0.5/fibric")
    edit(webhook, "  events:", "  secret_env: HOOK_SECRET\n  events:")

    result = validate("-f", str(folder))

    assert result.exit_code == 2
    assert f"{webhook}:{line_of(webhook, 'url:')}:3: spec.url: URL refused:" in result.stderr
    assert f"{webhook}:{line_of(webhook, 'secret_env')}:3: spec.secret_env: reads a server" in result.stderr


def test_the_installations_own_specs_may_use_what_a_tenant_may_not(folder: Path) -> None:
    webhook = folder / "webhook.yaml"
    edit(webhook, "https://hooks.example/fibric", "http://127.0.0.1:9000/fibric")
    assert validate("-f", str(folder)).exit_code == 2
    result = validate("-f", str(folder), "--installation")
    assert result.exit_code == 0, result.output


ROUTES = """\
routes:
  gpt-large:
    base_url: https://api.openai.com/v1
    model: gpt-4o
    api_key_env: OPENAI_API_KEY
    tenants: "*"
"""


def test_an_unknown_llm_route_is_reported_with_the_closest_route(folder: Path, tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    operator = folder / "operator.yaml"
    edit(operator, "model: rules", "model: gpt-larg")

    assert validate("-f", str(folder)).exit_code == 0  # no routes file: the server decides
    result = validate("-f", str(folder), "--llm-routes", str(routes))

    assert result.exit_code == 2
    line = line_of(operator, "model:")
    assert (f"{operator}:{line}:3: spec.model: model 'gpt-larg' is neither 'rules' nor a route of the LLM "
            "routes file; did you mean 'gpt-large'?") in result.stderr
    edit(operator, "model: gpt-larg", "model: gpt-large")
    assert validate("-f", str(folder), "--llm-routes", str(routes)).exit_code == 0


def test_a_broken_routes_file_is_bad_input_naming_the_field(folder: Path, tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES.replace("base_url", "base_ulr"))
    result = validate("-f", str(folder), "--llm-routes", str(routes))
    assert result.exit_code == 2
    assert "LLM routes: routes.gpt-large.base_url: Field required" in result.stderr
    assert "Traceback" not in result.output


def test_one_file_resolves_its_references_against_its_folder(folder: Path) -> None:
    operator = folder / "operator.yaml"

    result = validate("-f", str(operator))

    assert result.exit_code == 0, result.output
    assert "1 document in 1 file: valid" in result.stdout
    assert result.stderr == ""  # the connector beside it fulfils the capability


def test_one_file_still_reports_a_policy_its_folder_lacks(folder: Path) -> None:
    operator = folder / "operator.yaml"
    edit(operator, "policy: incident", "policy: incidnet")
    result = validate("-f", str(operator))
    assert result.exit_code == 2
    assert f"{operator}:{line_of(operator, 'policy:')}:3: spec.policy: policy 'incidnet' does not exist" \
        in result.stderr


def test_a_broken_neighbour_does_not_fail_the_file_validated(folder: Path) -> None:
    (folder / "webhook.yaml").write_text("kind: [oops\n")
    result = validate("-f", str(folder / "operator.yaml"))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(("yaml", "needle", "expected"), [
    (OPERATOR.replace("  policy:", "  polcy: x\n  policy:"), "polcy",
     "spec.polcy: unknown field; did you mean 'policy'?"),
    (WEBHOOK.replace("metadata:", "metdata: {}\nmetadata:"), "metdata",
     "metdata: unknown field; did you mean 'metadata'?"),
    (CONNECTOR.replace("    catalog: orders", "    catlog: orders"), "catlog",
     "spec.transport.catlog: unknown field; did you mean 'catalog'?"),
    (OPERATOR.replace("  policy:", "  zzz: 1\n  policy:"), "zzz", "spec.zzz: unknown field"),
])
def test_an_unknown_spec_field_names_the_closest_field(tmp_path: Path, yaml: str, needle: str,
                                                       expected: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(yaml))
    result = validate("-f", str(spec))
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert any(line.startswith(f"{spec}:{line_of(spec, needle)}:") and line.endswith(expected)
               for line in lines), lines
