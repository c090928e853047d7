"""Checks across a set of documents: duplicates, dangling policies, unfulfilled capabilities."""

from __future__ import annotations

from pathlib import Path

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
"""

POLICY = """\
apiVersion: fibric.io/v1
kind: Policy
metadata:
  name: ship-risk-guard
spec:
  rego: "package fibric.ship_risk"
"""

CONNECTOR = """\
apiVersion: fibric.io/v1
kind: Connector
metadata:
  name: magento
spec:
  transport: {stdio: {command: python}}
  capabilities: {orders.hold: orders.hold, orders.notify: orders.notify}
"""


def load(tmp_path: Path, **files: str) -> list[specs.Loaded]:
    for name, text in files.items():
        (tmp_path / f"{name}.yaml").write_text(text, encoding="utf-8")
    return specs.load_paths([tmp_path / f"{name}.yaml" for name in files])


def test_a_complete_set_has_no_problems_or_warnings(tmp_path: Path) -> None:
    report = specs.check_set(load(tmp_path, a=OPERATOR, b=POLICY, c=CONNECTOR))

    assert report.problems == []
    assert report.warnings == []
    report.raise_for_problems()


def test_duplicates_across_files_name_both_locations(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    loaded = load(tmp_path, a=OPERATOR + "---\n" + POLICY, b=CONNECTOR + "---\n" + OPERATOR)

    report = specs.check_set(loaded)

    assert [str(p) for p in report.problems] == [
        f"{b}:12:3: metadata.name: duplicate Operator 'ship-risk' (first defined at {a}:1)"
    ]


def test_duplicates_within_one_file(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    loaded = load(tmp_path, a=POLICY + "---\n" + OPERATOR + "---\n" + POLICY)

    report = specs.check_set(loaded)

    assert [str(p) for p in report.problems] == [
        f"{a}:19:3: metadata.name: duplicate Policy 'ship-risk-guard' (first defined at {a}:1)"
    ]


def test_the_same_name_in_different_kinds_is_fine(tmp_path: Path) -> None:
    policy = POLICY.replace("ship-risk-guard", "ship-risk")
    operator = OPERATOR.replace("policy: ship-risk-guard", "policy: ship-risk")

    report = specs.check_set(load(tmp_path, a=operator, b=policy, c=CONNECTOR))

    assert report.problems == []


def test_dangling_policy_reference_is_an_error(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    report = specs.check_set(load(tmp_path, a=OPERATOR, c=CONNECTOR))

    assert [str(p) for p in report.problems] == [
        f"{a}:7:3: spec.policy: policy 'ship-risk-guard' does not exist"
    ]
    with pytest.raises(errors.SpecInvalid) as e:
        report.raise_for_problems()
    assert e.value.problems == report.problems


def test_live_policies_satisfy_the_reference(tmp_path: Path) -> None:
    report = specs.check_set(
        load(tmp_path, a=OPERATOR, c=CONNECTOR), live_policies=["ship-risk-guard"]
    )

    assert report.problems == []


def test_unfulfilled_capability_is_a_warning_not_an_error(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    connector = CONNECTOR.replace(", orders.notify: orders.notify", "")

    report = specs.check_set(load(tmp_path, a=OPERATOR, b=POLICY, c=connector))

    assert report.problems == []
    assert [str(w) for w in report.warnings] == [
        f"{a}:6:31: spec.capabilities[1]: no connector fulfils capability 'orders.notify'"
    ]
    report.raise_for_problems()  # warnings alone never fail an apply


def test_no_connectors_warns_for_every_capability(tmp_path: Path) -> None:
    report = specs.check_set(load(tmp_path, a=OPERATOR, b=POLICY))

    assert [w.path for w in report.warnings] == ["spec.capabilities[0]", "spec.capabilities[1]"]


def test_live_capabilities_fulfil_operators(tmp_path: Path) -> None:
    report = specs.check_set(
        load(tmp_path, a=OPERATOR, b=POLICY),
        live_capabilities=["orders.hold", "orders.notify"],
    )

    assert report.warnings == []


def test_problems_and_warnings_are_reported_together(tmp_path: Path) -> None:
    report = specs.check_set(load(tmp_path, a=OPERATOR))

    assert [p.path for p in report.problems] == ["spec.policy"]
    assert [w.path for w in report.warnings] == ["spec.capabilities[0]", "spec.capabilities[1]"]
