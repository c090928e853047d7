"""The OPA engine speaks OPA's REST API: policy PUT, data POST with input, OPA's error bodies."""

from __future__ import annotations

import dataclasses
import json
import urllib.request

import pytest
from fake_opa import FakeOpa
from policy_support import action_input

from fibric import errors, policies
from fibric.policies import opa as opa_engine


def guard(rule: str) -> policies.CompiledPolicy:
    return policies.compile(
        f'package fibric.guard\n\nimport rego.v1\n\ndecision := {{"decision": "ALLOW", "rule": "{rule}"}}\n',
        name="guard.rego",
    )


def test_load_pushes_the_policy_with_put(
    opa: policies.OpaEngine, fake_opa: FakeOpa, ship_risk: policies.CompiledPolicy
) -> None:
    opa.load(ship_risk)

    module_id = f"fibric/{ship_risk.sha256}"
    assert ("PUT", f"/v1/policies/{module_id}") in fake_opa.requests
    pushed = fake_opa.modules[module_id]
    # Only the package name changes, on its own line: OPA's error rows are the source's rows.
    assert len(pushed.splitlines()) == len(ship_risk.source.splitlines())
    assert f"package fibric_policies.v{ship_risk.sha256[:32]}.fibric.ship_risk" in pushed
    assert pushed.replace(opa_engine.mounted_package(ship_risk), "fibric.ship_risk") == ship_risk.source


def test_a_decision_is_a_data_post_with_input_and_strict_builtin_errors(
    opa: policies.OpaEngine, fake_opa: FakeOpa, ship_risk: policies.CompiledPolicy
) -> None:
    decision = policies.evaluate(opa, ship_risk, action_input("orders.hold"))

    assert (decision.decision, decision.rule) == (policies.Verdict.ALLOW, "orders.hold")
    assert decision.engine == "opa"
    path = opa_engine.mounted_package(ship_risk).replace(".", "/")
    assert ("POST", f"/v1/data/{path}/decision?strict-builtin-errors=true") in fake_opa.requests
    # The first decision pushed the policy itself (lazily), before asking.
    assert [m for m, _ in fake_opa.requests] == ["PUT", "POST"]


def test_the_push_happens_once_per_version(
    opa: policies.OpaEngine, fake_opa: FakeOpa, ship_risk: policies.CompiledPolicy
) -> None:
    for _ in range(3):
        policies.evaluate(opa, ship_risk, action_input("orders.hold"))

    assert [m for m, _ in fake_opa.requests] == ["PUT", "POST", "POST", "POST"]


def test_two_versions_of_one_package_coexist(opa: policies.OpaEngine, fake_opa: FakeOpa) -> None:
    old, new = guard("old"), guard("new")
    opa.load(old)
    opa.load(new)

    assert policies.evaluate(opa, old, {}).rule == "old"
    assert policies.evaluate(opa, new, {}).rule == "new"
    assert len(fake_opa.modules) == 2


def test_the_same_source_shares_one_module(opa: policies.OpaEngine, fake_opa: FakeOpa) -> None:
    opa.load(guard("same").with_id("pol_tenant_a"))
    opa.load(guard("same").with_id("pol_tenant_b"))

    assert len(fake_opa.modules) == 1


def test_a_restarted_opa_gets_the_policy_back_on_reconcile(
    opa: policies.OpaEngine, fake_opa: FakeOpa, ship_risk: policies.CompiledPolicy
) -> None:
    opa.load(ship_risk)
    fake_opa.modules.clear()  # what a restart without persistence looks like
    fake_opa.put_policy("unrelated", "package other\n\nx := 1\n")  # bump the server's version

    lost = policies.evaluate(opa, ship_risk, action_input("orders.hold"))
    opa.load(ship_risk)  # the reconciler's periodic push
    back = policies.evaluate(opa, ship_risk, action_input("orders.hold"))

    assert lost.rule == "fail-closed:undefined"
    assert back.rule == "orders.hold"


def test_opa_rejecting_the_module_is_spec_invalid_with_opas_line(
    opa: policies.OpaEngine, ship_risk: policies.CompiledPolicy
) -> None:
    source = "package fibric.ship_risk\n\nimport rego.v1\n\nx := if {\n"
    broken = dataclasses.replace(ship_risk, source=source)

    with pytest.raises(errors.SpecInvalid) as caught:
        opa.load(broken)

    assert f"{ship_risk.name}:5:" in str(caught.value)
    assert "rego_parse_error" in str(caught.value)


def test_opa_rejecting_a_semantic_error_is_spec_invalid(opa: policies.OpaEngine) -> None:
    valid = policies.compile("package fibric.guard\n\ndefault decision := 1\n")
    source = "package fibric.guard\n\ndefault decision := 1\ndefault decision := 2\n"
    twice = dataclasses.replace(valid, source=source)

    with pytest.raises(errors.SpecInvalid, match="Multiple default rules"):
        opa.load(twice)


@pytest.mark.parametrize("failure", ["stopped", "500", "garbage"])
def test_a_push_that_cannot_reach_opa_is_temporary(
    opa: policies.OpaEngine, fake_opa: FakeOpa, ship_risk: policies.CompiledPolicy, failure: str
) -> None:
    if failure == "stopped":
        fake_opa.stop()
    elif failure == "500":
        fake_opa.fail_status = 500
    else:
        fake_opa.fail_status, fake_opa.fail_body = 502, b"<html>bad gateway</html>"

    with pytest.raises(errors.TemporaryError):
        opa.load(ship_risk)


def test_prune_deletes_only_unused_fibric_modules(opa: policies.OpaEngine, fake_opa: FakeOpa) -> None:
    keep, drop = guard("keep"), guard("drop")
    opa.load(keep)
    opa.load(drop)
    fake_opa.put_policy("not-ours", "package elsewhere\n\nx := 1\n")

    deleted = opa.prune([keep])

    assert deleted == [f"fibric/{drop.sha256}"]
    assert set(fake_opa.modules) == {f"fibric/{keep.sha256}", "not-ours"}
    assert policies.evaluate(opa, drop, {}).rule == "drop"  # pushed again on demand


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1:8181", "127.0.0.1:8181", "http://127.0.0.1:8181/v1", "http://:8181",
            "http://127.0.0.1:8181?x=1"],
)
def test_a_bad_url_is_refused_at_start_up(url: str) -> None:
    with pytest.raises(ValueError, match="OPA url"):
        policies.OpaEngine(url)


def test_open_engine_picks_the_configured_engine(fake_opa: FakeOpa) -> None:
    assert isinstance(policies.open_engine("embedded", timeout=0.2), policies.EmbeddedEngine)
    chosen = policies.open_engine("opa", url=fake_opa.url, timeout=0.2)
    assert isinstance(chosen, policies.OpaEngine) and chosen.timeout == 0.2
    with pytest.raises(ValueError, match=r"needs policies\.url"):
        policies.open_engine("opa")
    with pytest.raises(ValueError, match=r"unknown policies\.engine"):
        policies.open_engine("wasm")


# --- the fake itself answers like OPA (so the tests above mean something) ------------


def call(fake: FakeOpa, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(fake.url + path, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_fake_answers_opas_documented_shapes(fake_opa: FakeOpa) -> None:
    module = b"package p\n\nimport rego.v1\n\nd := input.x * 2\n"
    assert call(fake_opa, "PUT", "/v1/policies/p", module) == (200, {})
    assert call(fake_opa, "POST", "/v1/data/p/d", b'{"input": {"x": 21}}') == (200, {"result": 42})
    assert call(fake_opa, "POST", "/v1/data/p/missing", b'{"input": {}}') == (200, {})
    assert call(fake_opa, "POST", "/v1/data/p/d", b"{not json")[0] == 400
    status, body = call(fake_opa, "PUT", "/v1/policies/q", b"package q\n\nx := {\n")
    assert status == 400 and body["code"] == "invalid_parameter"
    assert body["errors"][0]["location"]["row"] == 3  # type: ignore[index]
    assert call(fake_opa, "GET", "/v1/policies/nope")[0] == 404
    assert call(fake_opa, "DELETE", "/v1/policies/p") == (200, {})
    assert call(fake_opa, "GET", "/health") == (200, {})


def test_the_fake_treats_builtin_errors_as_undefined_unless_strict(fake_opa: FakeOpa) -> None:
    call(fake_opa, "PUT", "/v1/policies/p", b'package p\n\nd := to_number(input.x)\n')

    lenient = call(fake_opa, "POST", "/v1/data/p/d", b'{"input": {"x": "abc"}}')
    strict = call(fake_opa, "POST", "/v1/data/p/d?strict-builtin-errors=true", b'{"input": {"x": "abc"}}')

    assert lenient == (200, {})
    assert strict[0] == 500 and strict[1]["code"] == "internal_error"
    assert "eval_builtin_error" in str(strict[1]["message"])
