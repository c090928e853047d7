"""`fibric policy test|eval` and the Rego checks of `fibric validate`: exit codes CI relies on."""

from __future__ import annotations

import json
from pathlib import Path

from cli_support import line_of, run

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
POLICIES = EXAMPLES / "policies"

FAILING_TEST = """\
package fibric.ship_risk_wrong_test

import rego.v1

import data.fibric.ship_risk

test_hold_is_blocked if {
\td := ship_risk.decision with input as {"action": {"capability": "orders.hold"}}
\td.decision == "BLOCK"
}
"""


def test_policy_test_passes_on_the_examples() -> None:
    result = run(["policy", "test", str(POLICIES)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "data.fibric.ship_risk_test.test_hold_is_allowed: PASS" in "\n".join(lines)
    assert lines[-1].startswith("PASS: ")
    passed, total = lines[-1].removeprefix("PASS: ").split("/")
    assert passed == total and int(total) > 0


def test_policy_test_runs_a_spec_files_tests() -> None:
    result = run(["policy", "test", str(EXAMPLES / "specs" / "policies.yaml")])
    assert result.exit_code == 0, result.output
    assert "test_notify_at_the_cap_is_blocked: PASS" in result.stdout


def test_a_failing_rego_test_exits_1_and_names_it(tmp_path: Path) -> None:
    (tmp_path / "ship_risk.rego").write_text((POLICIES / "ship_risk.rego").read_text())
    (tmp_path / "wrong_test.rego").write_text(FAILING_TEST)
    result = run(["policy", "test", str(tmp_path)])
    assert result.exit_code == 1
    assert "data.fibric.ship_risk_wrong_test.test_hold_is_blocked: FAIL" in result.stdout
    assert "FAIL: 1/1" in result.stdout.splitlines()[-1]
    assert "1 of 1 policy tests failed" in result.stderr


def test_policy_test_of_bad_input_exits_2(tmp_path: Path) -> None:
    missing = run(["policy", "test", str(tmp_path / "nope.rego")])
    assert missing.exit_code == 2
    assert "no such file or directory" in missing.stderr
    broken = tmp_path / "broken.rego"
    broken.write_text("package fibric.broken\n\nx := (1\n")
    result = run(["policy", "test", str(broken)])
    assert result.exit_code == 2
    assert f"{broken}:3:" in result.stderr
    assert "Traceback" not in result.output


def test_policy_eval_prints_the_decision_as_json() -> None:
    result = run(["policy", "eval", "-f", str(POLICIES / "ship_risk.rego"),
                  "--input", str(POLICIES / "inputs" / "hold.json")])
    assert result.exit_code == 0, result.output
    decision = json.loads(result.stdout)
    assert (decision["decision"], decision["rule"], decision["failure"]) == ("ALLOW", "orders.hold", None)
    assert len(decision["policy_sha256"]) == 64


def test_policy_eval_of_a_flood_blocks_with_the_reason() -> None:
    result = run(["policy", "eval", "-f", str(POLICIES / "ship_risk.rego"),
                  "--input", str(POLICIES / "inputs" / "notify_flood.json")])
    assert result.exit_code == 0, result.output
    decision = json.loads(result.stdout)
    assert (decision["decision"], decision["rule"]) == ("BLOCK", "orders.notify.cap")
    assert decision["reasons"] and "cap 3" in decision["reasons"][0]


def test_policy_eval_of_a_bad_input_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "input.json"
    bad.write_text("[1, 2]")
    result = run(["policy", "eval", "-f", str(POLICIES / "ship_risk.rego"), "--input", str(bad)])
    assert result.exit_code == 2
    assert "must be a JSON object" in result.stderr


def test_validate_fails_with_the_rego_line_of_a_broken_policy(repo: Path) -> None:
    rego = repo.parent / "policies" / "guard.rego"
    rego.write_text(rego.read_text().replace('== "orders.hold"', '== ("orders.hold"'))
    result = run(["validate", "-f", str(repo)])
    assert result.exit_code == 2
    spec_line = line_of(repo / "policy.yaml", "rego_file")
    rego_line = line_of(rego, '("orders.hold"')
    assert any(
        line.startswith(f"{repo / 'policy.yaml'}:{spec_line}:") and f"{rego}:{rego_line}:" in line
        for line in result.stderr.splitlines()
    ), result.stderr
    assert "valid" not in result.stdout


def test_validate_runs_the_policies_rego_tests(repo: Path) -> None:
    (repo.parent / "policies" / "guard_test.rego").write_text(
        "package fibric.guard_test\n\nimport rego.v1\n\nimport data.fibric.guard\n\n"
        'test_notify_is_allowed if {\n\tguard.decision.decision == "ALLOW" '
        'with input as {"action": {"capability": "orders.notify"}}\n}\n')
    policy = repo / "policy.yaml"
    policy.write_text(policy.read_text() + "  tests: [../policies/guard_test.rego]\n")
    result = run(["validate", "-f", str(repo)])
    assert result.exit_code == 1
    assert "data.fibric.guard_test.test_notify_is_allowed: FAIL" in result.stdout
    assert "1 of 1 policy tests failed" in result.stderr
