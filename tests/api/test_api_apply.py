"""POST /v1/apply and GET /v1/specs: declarative, idempotent, all or nothing."""

from __future__ import annotations

from typing import Any

from api_support import (
    Recorder,
    TestClient,
    apply,
    connector_doc,
    doc,
    error_of,
    fields_of,
    operator_doc,
    policy_doc,
    webhook_doc,
)

from fibric import store


def live(client: TestClient) -> dict[tuple[str, str], dict[str, Any]]:
    body = client.get("/v1/specs", params={"limit": 100}).json()
    return {(d["kind"], d["metadata"]["name"]): d for d in body["data"]}


def actions(result: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(c["kind"], c["name"]): c["action"] for c in result["changes"]}


def stack() -> list[dict[str, Any]]:
    return [policy_doc("guard"), connector_doc("magento"), operator_doc("ship-risk", "guard"),
            webhook_doc("ops-channel")]


def test_first_apply_creates_and_reapply_changes_nothing(client: TestClient) -> None:
    first = apply(client, stack(), apply_set="prod")
    assert first["object"] == "apply_result"
    assert first["dry_run"] is False
    assert set(actions(first).values()) == {"created"}
    for change in first["changes"]:
        assert change["generation"] == 1
        assert change["id"].startswith({"Policy": "pol_", "Connector": "cn_", "Operator": "op_",
                                         "Webhook": "whk_"}[change["kind"]])
    before = live(client)

    again = apply(client, stack(), apply_set="prod")
    assert set(actions(again).values()) == {"unchanged"}
    assert [c["id"] for c in again["changes"]] == [c["id"] for c in first["changes"]]
    after = live(client)
    assert {k: v["generation"] for k, v in after.items()} == {k: 1 for k in before}
    assert {k: v["updated_at"] for k, v in after.items()} == {k: v["updated_at"] for k, v in before.items()}


def test_a_changed_spec_is_configured_and_bumps_its_generation(client: TestClient) -> None:
    apply(client, stack())
    changed = stack()
    changed[2]["spec"]["schedule"] = "*/5 * * * *"
    result = apply(client, changed)
    assert actions(result)[("Operator", "ship-risk")] == "configured"
    assert actions(result)[("Policy", "guard")] == "unchanged"
    operator = client.get("/v1/operators/ship-risk").json()
    assert operator["schedule"] == "*/5 * * * *"
    assert operator["generation"] == 2


def test_the_webhook_secret_appears_once(client: TestClient) -> None:
    first = apply(client, stack())
    [created] = [c for c in first["changes"] if c["kind"] == "Webhook"]
    secret = created["signing_secret"]
    assert secret.startswith("whsec_")
    assert all("signing_secret" not in c for c in first["changes"] if c["kind"] != "Webhook")
    again = client.post("/v1/apply", json={"documents": stack()})
    assert secret not in again.text
    for path in ("/v1/webhooks", "/v1/webhooks/ops-channel", "/v1/specs"):
        assert secret not in client.get(path).text


def test_a_webhook_signing_with_a_tenant_secret_gets_no_generated_secret(client: TestClient) -> None:
    result = apply(client, [webhook_doc("h", secret_ref="hook-secret")])
    assert "signing_secret" not in result["changes"][0]


def test_a_dangling_policy_reference_writes_nothing(client: TestClient, recorder: Recorder) -> None:
    apply(client, [policy_doc("existing")])
    notified = len(recorder.notified)
    batch = [policy_doc("new-guard"), connector_doc("magento"), operator_doc("ship-risk", "nope")]
    error = error_of(client.post("/v1/apply", json={"documents": batch}), 400, "invalid_request")
    assert fields_of(error) == ["documents[2].spec.policy"]
    assert error["message"] == "documents[2].spec.policy: policy 'nope' does not exist"
    assert list(live(client)) == [("Policy", "existing")]
    assert len(recorder.notified) == notified


def test_every_invalid_document_is_reported_by_index(client: TestClient) -> None:
    bad_operator = operator_doc("ship-risk", capabilities=["orders.hold", "Bad Cap"])
    batch = [
        policy_doc("guard"),
        bad_operator,
        "not a mapping",
        doc("Gadget", "x", {}),
        {**webhook_doc("h"), "spec": {"url": "https://a.example", "events": ["nope"]}},
        doc("Policy", "file-based", {"rego_file": "guard.rego"}),
    ]
    error = error_of(client.post("/v1/apply", json={"documents": batch}), 400, "invalid_request")
    assert fields_of(error) == [
        "documents[1].spec.capabilities[1]",
        "documents[2]",
        "documents[3].kind",
        "documents[4].spec.events[0]",
    ]
    assert error["message"].startswith("documents[1].spec.capabilities[1]: ")
    assert live(client) == {}


def test_a_kind_that_is_not_a_string_is_400_not_500(client: TestClient) -> None:
    batch = [{"kind": ["Policy"]}, {**policy_doc(), "kind": {"a": 1}}]
    error = error_of(client.post("/v1/apply", json={"documents": batch}), 400, "invalid_request")
    assert fields_of(error) == ["documents[0].kind", "documents[1].kind"]


def test_a_policy_must_carry_its_rego_inline(client: TestClient) -> None:
    batch = [doc("Policy", "file-based", {"rego_file": "guard.rego"})]
    error = error_of(client.post("/v1/apply", json={"documents": batch}), 400, "invalid_request")
    assert fields_of(error) == ["documents[0].spec.rego_file"]


def test_duplicates_in_one_apply_name_both_places(client: TestClient) -> None:
    batch = [policy_doc("guard"), policy_doc("guard")]
    error = error_of(client.post("/v1/apply", json={"documents": batch}), 400, "invalid_request")
    assert fields_of(error) == ["documents[1].metadata.name"]
    assert "documents[0]" in error["fields"][0]["message"]


def test_unfulfilled_capabilities_are_warnings_by_index(client: TestClient) -> None:
    result = apply(client, [policy_doc("guard"), operator_doc("op", capabilities=["orders.hold",
                                                                                   "orders.notify"])])
    assert result["warnings"] == [
        {"field": "documents[1].spec.capabilities[0]",
         "message": "no connector fulfils capability 'orders.hold'"},
        {"field": "documents[1].spec.capabilities[1]",
         "message": "no connector fulfils capability 'orders.notify'"},
    ]


def test_rego_that_compiles_but_cannot_be_right_is_applied_with_warnings(client: TestClient) -> None:
    policy = policy_doc("guard")
    policy["spec"]["rego"] = (
        "package fibric.guard\n\nimport rego.v1\n\n"
        'default decision := {"decision": "BLOCK", "rule": "deny"}\n\n'
        'decision := {"decision": "allow", "rule": "hold"} if input.actoin.capability == "orders.hold"\n')
    policy["spec"]["shadow"] = {"rego": "package fibric.guard\n\ndecision := {\n"}

    result = apply(client, [policy])

    assert actions(result) == {("Policy", "guard"): "created"}
    by_field: dict[str, list[str]] = {}
    for warning in result["warnings"]:
        by_field.setdefault(warning["field"], []).append(warning["message"])
    assert sorted(by_field) == ["documents[0].spec.rego", "documents[0].spec.shadow.rego"]
    live = by_field["documents[0].spec.rego"]
    assert any("guard.rego:7:" in m and "'input.actoin' is not in the input document" in m
               for m in live), live
    assert any("guard.rego:7:13: decision 'allow' is not one of ALLOW, ALERT, BLOCK" in m
               for m in live), live
    shadow = by_field["documents[0].spec.shadow.rego"]
    assert all(m.startswith("the shadow does not compile: ") for m in shadow), shadow


def test_dry_run_reports_and_writes_nothing(client: TestClient, recorder: Recorder) -> None:
    result = apply(client, stack(), dry_run=True)
    assert result["dry_run"] is True
    assert set(actions(result).values()) == {"created"}
    assert all(c["id"] is None for c in result["changes"])
    assert live(client) == {}

    apply(client, stack(), apply_set="prod")
    notified = len(recorder.notified)
    changed = stack()[:1]
    changed[0]["spec"]["query"] = "data.fibric.guard.verdict"
    result = apply(client, changed, apply_set="prod", prune=True, dry_run=True)
    assert actions(result)[("Policy", "guard")] == "configured"
    assert sorted(a for a in actions(result).values()) == ["configured", "pruned", "pruned", "pruned"]
    after = live(client)
    assert len(after) == 4
    assert after[("Policy", "guard")]["spec"]["query"] == "data.fibric.guard.decision"
    assert len(recorder.notified) == notified


def test_prune_removes_only_objects_of_the_same_apply_set(client: TestClient) -> None:
    apply(client, [policy_doc("guard"), operator_doc("a-op", "guard"), operator_doc("gone", "guard")],
          apply_set="team-a")
    apply(client, [policy_doc("b-guard")], apply_set="team-b")
    created = client.post("/v1/policies", json={"name": "by-hand", "rego": "package x"})
    assert created.status_code == 201

    result = apply(client, [policy_doc("guard"), operator_doc("a-op", "guard")],
                   apply_set="team-a", prune=True)
    assert actions(result) == {("Policy", "guard"): "unchanged", ("Operator", "a-op"): "unchanged",
                               ("Operator", "gone"): "pruned"}
    assert set(live(client)) == {("Policy", "guard"), ("Operator", "a-op"), ("Policy", "b-guard"),
                                 ("Policy", "by-hand")}


def test_objects_created_through_the_api_are_never_pruned(client: TestClient) -> None:
    policy = client.post("/v1/policies", json={"name": "guard", "rego": "package x"}).json()
    client.post("/v1/operators", json={"name": "op", "capabilities": ["a.b"], "policy_id": policy["id"]})
    client.post("/v1/webhooks", json={"url": "https://a.example/h", "events": ["plan.proposed"]})
    result = apply(client, [policy_doc("other")], apply_set="serve", prune=True)
    assert actions(result) == {("Policy", "other"): "created"}
    assert len(live(client)) == 4


def test_the_apply_set_shows_as_a_label(client: TestClient) -> None:
    apply(client, [policy_doc("guard")], apply_set="prod")
    client.post("/v1/policies", json={"name": "by-hand", "rego": "package x"})
    specs = live(client)
    assert specs[("Policy", "guard")]["metadata"]["labels"] == {"fibric.io/apply-set": "prod"}
    assert specs[("Policy", "by-hand")]["metadata"]["labels"] == {}


def test_prune_that_would_orphan_an_operator_is_refused(client: TestClient) -> None:
    apply(client, [policy_doc("guard")], apply_set="infra")
    apply(client, [operator_doc("op", "guard")], apply_set="apps")
    response = client.post("/v1/apply", json={"documents": [policy_doc("other")], "apply_set": "infra",
                                              "prune": True})
    error = error_of(response, 400, "invalid_request")
    assert "op" in error["message"]
    assert ("Policy", "guard") in live(client)


def test_prune_needs_an_apply_set(client: TestClient) -> None:
    response = client.post("/v1/apply", json={"documents": [policy_doc()], "prune": True})
    assert fields_of(error_of(response, 400, "invalid_request")) == ["apply_set"]


def test_bad_apply_options_are_400_naming_them(client: TestClient) -> None:
    cases = [
        ({"documents": []}, "documents"),
        ({"documents": "x"}, "documents"),
        ({}, "documents"),
        ({"documents": [policy_doc()], "apply_set": "Not A Slug"}, "apply_set"),
        ({"documents": [policy_doc()], "dry_run": "maybe"}, "dry_run"),
        ({"documents": [policy_doc()], "force": True}, "force"),
    ]
    for body, field in cases:
        error = error_of(client.post("/v1/apply", json=body), 400, "invalid_request")
        assert fields_of(error) == [field], body


def test_specs_show_the_full_document(client: TestClient) -> None:
    apply(client, [doc("Policy", "guard", {"rego": "package fibric.guard"}, labels={"team": "ops"})],
          apply_set="prod")
    [spec] = client.get("/v1/specs", params={"kind": "Policy"}).json()["data"]
    assert spec["object"] == "spec"
    assert spec["id"].startswith("pol_")
    assert spec["apiVersion"] == "fibric.io/v1"
    assert spec["kind"] == "Policy"
    assert spec["metadata"] == {"name": "guard",
                                "labels": {"team": "ops", "fibric.io/apply-set": "prod"}}
    assert spec["spec"]["rego"] == "package fibric.guard"
    assert spec["generation"] == 1
    # No controller here: the only condition is the apply set's (docs/sync.md).
    assert [(c["type"], c["status"]) for c in spec["status"]["conditions"]] == [("Synced", "True")]
    assert spec["created_at"].endswith("Z") and spec["updated_at"].endswith("Z")


def test_specs_filter_by_kind(client: TestClient) -> None:
    apply(client, stack())
    kinds = {d["kind"] for d in client.get("/v1/specs", params={"kind": "Connector"}).json()["data"]}
    assert kinds == {"Connector"}
    error = error_of(client.get("/v1/specs", params={"kind": "Gadget"}), 400, "invalid_request")
    assert fields_of(error) == ["kind"]


def test_the_controller_is_told_about_every_change(
    client: TestClient, recorder: Recorder, tenant: store.Tenant
) -> None:
    apply(client, stack(), apply_set="prod")
    assert sorted(recorder.notified) == sorted(
        (tenant.id, kind, name) for kind, name in
        [("Policy", "guard"), ("Connector", "magento"), ("Operator", "ship-risk"),
         ("Webhook", "ops-channel")]
    )
    recorder.notified.clear()
    apply(client, stack(), apply_set="prod")
    assert recorder.notified == []
    changed = stack()[:2]
    changed[1]["spec"]["display_name"] = "Magento"
    apply(client, [*changed, stack()[2]], apply_set="prod", prune=True)
    assert sorted(recorder.notified) == [(tenant.id, "Connector", "magento"),
                                         (tenant.id, "Webhook", "ops-channel")]
    recorder.notified.clear()
    client.post("/v1/policies", json={"name": "by-hand", "rego": "package x"})
    client.delete("/v1/policies/by-hand")
    assert recorder.notified == [(tenant.id, "Policy", "by-hand")] * 2


def test_the_lifespan_starts_and_stops_the_controller(app: Any, recorder: Recorder) -> None:
    with TestClient(app) as c:
        assert recorder.events == ["start"]
        assert c.get("/healthz").status_code == 200
    assert recorder.events == ["start", "stop"]
