"""Compiling at validate/apply time: bad Rego is rejected with its line, good Rego is compiled once."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from policy_support import SHIP_RISK

from fibric import errors, policies, specs


def compile_error(source: str, **kwargs: object) -> str:
    with pytest.raises(errors.SpecInvalid) as caught:
        policies.compile(source, name="guard.rego", **kwargs)  # type: ignore[arg-type]
    return str(caught.value)


@pytest.mark.parametrize(
    ("source", "where", "says"),
    [
        ("package p\n\nimport rego.v1\n\ndecision := if {\n", "guard.rego:5:16", "unclosed"),
        ("package p\n\nimport rego.v1\n\nd := 1 +* 2\n", "guard.rego:5:8", "Invalid arithmetic operator"),
        # columns count characters, not UTF-8 bytes
        ('package p\n# é ü 😀\ndecision := ["ü😀", {"x": é}}]\n', "guard.rego:3:21", "Invalid collection"),
        (
            "package p\n\nimport rego.v1\n\ndefault decision := 1\n\ndefault decision := 2\n",
            "guard.rego:7:1", "Multiple default rules",
        ),
        (
            'package p\n\nimport rego.v1\n\ndecision := {"decision": "ALLOW", "rule": "r"} if {\n'
            '\tstartwith(input.action.capability, "orders.")\n}\n',
            "guard.rego:6:2", "unknown function 'startwith'",
        ),
        ('package p\n\ndecision := net.cidr_contains("10.0.0.0/8", input.ip)\n', "guard.rego:3:13",
         "unknown function 'net.cidr_contains'"),
        ("import rego.v1\n\ndecision := 1\n", "guard.rego:1:1", "must start with 'package"),
        ("", "guard.rego:1:1", "must start with 'package"),
        ('package p["x"]\n\ndecision := 1\n', "guard.rego:1:1", "must start with 'package"),
        ("package p\n\ndecision := data.p.rule\nrule := 1\n", "guard.rego:3:13",
         "refers to its own package through 'data.p'"),
    ],
    ids=["unclosed", "operator", "unicode-column", "two-defaults", "unknown-function",
         "unsupported-builtin", "no-package", "empty", "bracket-package", "self-reference"],
)
def test_rego_that_does_not_compile_names_its_line(source: str, where: str, says: str) -> None:
    message = compile_error(source)

    assert f"{where}: " in message
    assert says in message


def test_every_problem_is_a_located_spec_problem() -> None:
    with pytest.raises(errors.SpecInvalid) as caught:
        policies.compile("package p\n\nx := foo(1)\ny := bar(2)\n", name="guard.rego")

    problems = caught.value.problems
    assert [p.path for p in problems] == ["spec.rego", "spec.rego"]
    assert [p.message.split(": ")[0] for p in problems] == ["guard.rego:3:6", "guard.rego:4:6"]


def test_calls_inside_strings_and_comments_are_not_functions() -> None:
    policy = policies.compile(
        "package p\n\nimport rego.v1\n\n# startwith(x) is a typo we do not make\n"
        'decision := {"decision": "ALLOW", "rule": "not_a_call(1)"} if {\n'
        '\tstartswith(input.s, `raw foo(`)\n\thelper(1)\n}\n\nhelper(x) := x\n'
    )

    assert policy.package == "p"


def test_the_query_defaults_to_the_packages_decision() -> None:
    policy = policies.compile("package fibric.guard\n\ndecision := 1\n")

    assert policy.query == "data.fibric.guard.decision"


def test_an_explicit_query_is_kept() -> None:
    policy = policies.compile("package fibric.guard\n\nverdict := 1\n", query="data.fibric.guard.verdict")

    assert policy.query == "data.fibric.guard.verdict"


def test_a_query_outside_the_package_is_rejected() -> None:
    with pytest.raises(errors.SpecInvalid) as caught:
        policies.compile("package fibric.guard\n\ndecision := 1\n", query="data.fibric.other.decision")

    assert caught.value.problems[0].path == "spec.query"
    assert "outside the policy's package 'fibric.guard'" in str(caught.value)


def test_the_hash_is_over_the_exact_source() -> None:
    source = SHIP_RISK.read_text(encoding="utf-8")

    policy = policies.compile(source)
    reformatted = policies.compile(source + "\n")

    assert policy.sha256 == hashlib.sha256(source.encode("utf-8")).hexdigest()
    assert reformatted.sha256 != policy.sha256
    assert policies.compile(source).key == policy.key
    assert policy.with_id("pol_1").policy_id == "pol_1"
    assert policy.with_id("pol_1").sha256 == policy.sha256


def test_a_test_module_with_a_syntax_error_is_rejected_at_compile() -> None:
    bad_test = policies.Module("guard_test.rego", "package p_test\n\ntest_x if {\n")

    with pytest.raises(errors.SpecInvalid) as caught:
        policies.compile("package p\n\ndecision := 1\n", tests=[bad_test])

    assert caught.value.problems[0].path == "spec.test_rego"
    assert "guard_test.rego:3:" in str(caught.value)


def test_the_example_spec_compiles_with_its_tests() -> None:
    (item,) = specs.load_paths([SHIP_RISK.parents[1] / "specs" / "policies.yaml"])

    policy = policies.compile_spec(item, policy_id="pol_22b9")

    assert policy.query == "data.fibric.ship_risk.decision"
    assert policy.policy_id == "pol_22b9"
    assert policy.name.endswith("examples/policies/ship_risk.rego")
    assert [Path(t.name).name for t in policy.tests] == ["ship_risk_test.rego"]
    assert policy.sha256 == hashlib.sha256(SHIP_RISK.read_bytes()).hexdigest()


def test_a_spec_whose_rego_file_does_not_compile_points_at_both_files(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "specs").mkdir()
    (tmp_path / "policies" / "guard.rego").write_text("package g\n\nimport rego.v1\n\ndecision := if {\n")
    spec = tmp_path / "specs" / "policies.yaml"
    spec.write_text(
        "apiVersion: fibric.io/v1\nkind: Policy\nmetadata: {name: guard}\n"
        "spec:\n  rego_file: ../policies/guard.rego\n"
    )
    (item,) = specs.load_paths([spec])

    with pytest.raises(errors.SpecInvalid) as caught:
        policies.compile_spec(item)

    problem = caught.value.problems[0]
    assert (problem.file, problem.line, problem.path) == (str(spec), 5, "spec.rego_file")
    assert f"{tmp_path / 'policies' / 'guard.rego'}:5:16: this is unclosed" in str(problem)


def test_inline_rego_in_a_spec_is_located_in_the_yaml_and_the_rego(tmp_path: Path) -> None:
    spec = tmp_path / "policies.yaml"
    spec.write_text(
        "apiVersion: fibric.io/v1\nkind: Policy\nmetadata: {name: guard}\nspec:\n  rego: |\n"
        "    package g\n\n    decision := startwith(input.x, \"a\")\n"
    )
    (item,) = specs.load_paths([spec])

    with pytest.raises(errors.SpecInvalid) as caught:
        policies.compile_spec(item)

    problem = caught.value.problems[0]
    assert (problem.file, problem.path) == (str(spec), "spec.rego")
    assert "guard.rego:3:13: unknown function 'startwith'" in problem.message


def test_compile_spec_rejects_other_kinds() -> None:
    (item,) = specs.load_paths([SHIP_RISK.parents[1] / "specs" / "webhooks.yaml"])

    with pytest.raises(TypeError):
        policies.compile_spec(item)
