"""apply() rejects Rego that does not compile, at the Rego's line, and writes nothing of the set."""

from __future__ import annotations

import pytest
from controller_support import apply_yaml, connector, operator

from fibric import errors, store

GOOD = """\
package fibric.guard

import rego.v1

default decision := {"decision": "BLOCK", "rule": "default-deny"}
"""
BROKEN = GOOD + 'decision := {"decision": "ALLOW", "rule": "x"} if {\n  input.x == (1\n}\n'  # line 7


def policy(rego: str, name: str = "guard") -> str:
    body = "".join(f"    {line}\n" for line in rego.splitlines())
    return f"apiVersion: fibric.io/v1\nkind: Policy\nmetadata: {{name: {name}}}\nspec:\n  rego: |\n{body}"


def test_broken_rego_is_rejected_with_its_line_and_nothing_is_written(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    with pytest.raises(errors.SpecInvalid) as caught:
        apply_yaml(state, tenant.id, connector(), policy(BROKEN), operator())
    (problem,) = caught.value.problems
    assert problem.path == "spec.rego"
    assert "guard.rego:7:" in problem.message
    # The Policy's `rego:` key: after the connector's 6 lines, "---", and 4 lines of the policy.
    assert (problem.file, problem.line) == ("test.yaml", 12)
    assert [o for o in state.all_objects() if o.tenant_id == tenant.id] == []


def test_a_broken_update_keeps_the_live_policy(state: store.StateStore, tenant: store.Tenant) -> None:
    apply_yaml(state, tenant.id, policy(GOOD))
    with pytest.raises(errors.SpecInvalid, match=r"guard\.rego:7:"):
        apply_yaml(state, tenant.id, policy(BROKEN))
    live = state.get_object(tenant.id, "Policy", "guard")
    assert (live.generation, live.spec["rego"]) == (1, GOOD)


def test_a_query_outside_the_package_is_rejected(state: store.StateStore, tenant: store.Tenant) -> None:
    doc = policy(GOOD) + "  query: data.other.decision\n"
    with pytest.raises(errors.SpecInvalid) as caught:
        apply_yaml(state, tenant.id, doc)
    assert [p.path for p in caught.value.problems] == ["spec.query"]
    assert [o for o in state.all_objects() if o.tenant_id == tenant.id] == []
