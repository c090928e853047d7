"""Rego unit tests (`test_` rules, like `opa test`): what `fibric policy test` and `validate` run."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from policy_support import EXAMPLES, SHIP_RISK_TESTS

from fibric import errors, policies, specs
from fibric.policies import testing

POLICY = policies.Module(
    "guard.rego",
    "package guard\n\nimport rego.v1\n\n"
    'default decision := {"decision": "BLOCK", "rule": "default-deny"}\n\n'
    'decision := {"decision": "ALLOW", "rule": "small"} if input.amount < 10\n',
)


def unit_tests(body: str) -> policies.Module:
    header = "package guard_test\n\nimport rego.v1\n\nimport data.guard\n\n"
    return policies.Module("guard_test.rego", header + body)


def by_name(report: policies.TestReport) -> dict[str, policies.TestResult]:
    return {r.name.rsplit(".", 1)[-1]: r for r in report.results}


def test_the_example_policy_passes_its_tests() -> None:
    report = policies.run_path_tests([EXAMPLES / "policies"])

    assert report.passed
    assert len(report.results) == 16
    assert all(r.passed for r in report.results)
    assert report.lines()[-1] == "PASS: 16/16"


def test_a_spec_file_runs_its_policys_tests() -> None:
    report = policies.run_path_tests([EXAMPLES / "specs" / "policies.yaml"])

    assert report.passed and len(report.results) == 16


def test_validate_runs_the_tests_of_every_policy_in_a_set() -> None:
    loaded = specs.load_paths(sorted((EXAMPLES / "specs").glob("*.yaml")))

    report = policies.run_spec_tests(loaded)

    assert report.passed
    assert {Path(r.module).resolve() for r in report.results} == {SHIP_RISK_TESTS}


@pytest.mark.parametrize("isolated", [True, False], ids=["child-process", "in-process"])
def test_pass_fail_error_and_skip_are_reported_per_test(isolated: bool) -> None:
    tests = unit_tests(
        'test_small_is_allowed if { guard.decision.decision == "ALLOW" with input as {"amount": 5} }\n'
        'test_wrong_expectation if { guard.decision.decision == "ALLOW" with input as {"amount": 50} }\n'
        "test_undefined if { input.nothing }\n"
        "test_errors if { 1 / 0 == 1 }\n"
        "test_not_true := 5\n"
        "todo_test_later if { false }\n"
    )

    report = policies.run_tests([POLICY, tests], isolated=isolated)

    results = by_name(report)
    assert results["test_small_is_allowed"].passed
    assert not results["test_wrong_expectation"].passed
    assert results["test_wrong_expectation"].message == "undefined"
    assert results["test_undefined"].message == "undefined"
    assert results["test_errors"].message.startswith("error: ")
    assert results["test_not_true"].message == "value 5"
    assert results["todo_test_later"].skipped
    assert not report.passed
    assert [r.name for r in report.failures] == [
        "data.guard_test.test_wrong_expectation", "data.guard_test.test_undefined",
        "data.guard_test.test_errors", "data.guard_test.test_not_true",
    ]
    assert report.lines()[-1] == "PASS: 1/6  FAIL: 4/6  SKIPPED: 1/6"


def test_with_input_works_when_the_rule_uses_operators_and_builtins() -> None:
    """rego-cpp 1.5.2 crashes on `with input as` here; the runner re-roots input so it does not."""
    tests = unit_tests(
        "test_cap if {\n"
        '\td := guard.decision with input as {"amount": count([1, 2]) + 1}\n'
        '\td.rule == "small"\n}\n'
        'test_partial if { guard.decision.rule == "small" with input.amount as 3 }\n'
    )

    report = policies.run_tests([POLICY, tests])

    assert report.passed, report.lines()
    assert len(report.results) == 2


def test_rerooting_keeps_lines_strings_and_comments() -> None:
    source = 'package p\n# input stays in comments\nx := input.a # input\ny := "input"\nz := inputs\n'

    rerooted = testing.reroot_input(source)

    assert rerooted.splitlines() == [
        "package p", "# input stays in comments", "x := data.fibric_test_input.a # input",
        'y := "input"', "z := inputs",
    ]


def test_a_test_module_that_does_not_compile_is_invalid_with_its_line() -> None:
    broken = policies.Module("guard_test.rego", "package guard_test\n\nimport rego.v1\n\ntest_x if {\n")

    with pytest.raises(errors.SpecInvalid) as caught:
        policies.run_tests([POLICY, broken])

    assert "guard_test.rego:5:" in str(caught.value)


def test_semantic_errors_across_modules_are_invalid() -> None:
    clash = policies.Module("clash.rego", 'package guard\n\ndefault decision := {"decision": "ALLOW"}\n')

    with pytest.raises(errors.SpecInvalid) as caught:
        policies.run_tests([POLICY, clash], isolated=False)

    assert "Multiple default rules" in str(caught.value)


def test_a_crashing_runner_is_a_failed_run_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def crashed(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(args, -11, "", "terminate called after throwing\n")

    monkeypatch.setattr(testing.subprocess, "run", crashed)

    report = policies.run_tests([POLICY])

    assert not report.passed
    assert "rego-cpp crashed (SIGSEGV)" in report.results[0].message


def test_no_tests_is_a_pass_with_a_note() -> None:
    report = policies.run_tests([POLICY])

    assert report.passed and report.results == ()
    assert report.lines() == ["no tests found"]


def test_a_missing_path_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(errors.SpecInvalid, match="no such file"):
        policies.run_path_tests([tmp_path / "nope.rego"])


def test_a_directory_is_searched_recursively(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "guard.rego").write_text(POLICY.source)
    (tmp_path / "a" / "b" / "guard_test.rego").write_text(
        unit_tests('test_ok if { guard.decision.rule == "default-deny" with input as {} }\n').source
    )

    report = policies.run_path_tests([tmp_path])

    assert [r.name for r in report.results] == ["data.guard_test.test_ok"]
    assert report.passed


def test_a_test_that_prints_still_reports() -> None:
    # Rego's print() writes to stdout from C; the isolated runner must still read its answer.
    tests = unit_tests('test_prints if {\n  print("debugging", input)\n  guard.decision.decision == "ALLOW" '
                       'with input as {"amount": 5}\n}\n')

    report = policies.run_tests([POLICY, tests], isolated=True)

    assert by_name(report)["test_prints"].passed, report.lines()
