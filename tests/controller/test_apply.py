"""apply(): the one desired-state write, declarative, idempotent, all or nothing, on both backends."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fibric import errors, specs, store, trust
from fibric.controller import applier
from fibric.store import secretbox

KINDS = ("Operator", "Connector", "Policy", "Webhook")


def policy(name: str = "guard", decision: str = "ALLOW") -> str:
    return f"""\
apiVersion: fibric.io/v1
kind: Policy
metadata: {{name: {name}}}
spec:
  rego: |
    package fibric.guard
    decision := {{"decision": "{decision}", "rule": "default"}}
"""


def operator(
    name: str = "ship-risk", policy: str = "guard", capabilities: str = "[orders.hold]", labels: str = "{}"
) -> str:
    return f"""\
apiVersion: fibric.io/v1
kind: Operator
metadata:
  name: {name}
  labels: {labels}
spec:
  capabilities: {capabilities}
  policy: {policy}
"""


def connector(name: str = "magento", capabilities: str = "{orders.hold: hold, orders.notify: notify}") -> str:
    return f"""\
apiVersion: fibric.io/v1
kind: Connector
metadata: {{name: {name}}}
spec:
  transport: {{http: {{url: "https://orders.example/mcp"}}}}
  capabilities: {capabilities}
"""


def webhook(name: str = "ops-channel", extra: str = "") -> str:
    return f"""\
apiVersion: fibric.io/v1
kind: Webhook
metadata: {{name: {name}}}
spec:
  url: https://acme.example/hooks/fibric
  events: [plan.proposed]
{extra}"""


def load(*documents: str) -> list[specs.Loaded]:
    return specs.load_text("---\n".join(documents), "specs.yaml")


def full_set() -> list[specs.Loaded]:
    return load(policy(), operator(), connector(), webhook())


def everything(state: store.StateStore, tenant: store.Tenant) -> list[store.StoredObject]:
    return sorted(
        (o for kind in KINDS for o in state.list_objects(tenant.id, kind)), key=lambda o: o.seq
    )


def actions(result: applier.ApplyResult) -> list[tuple[str, str, str]]:
    return [(c.action, c.kind, c.name) for c in result.changes]


def summary(changes: Sequence[applier.Change]) -> list[tuple[str, str, str, int | None]]:
    return [(c.action, c.kind, c.name, c.generation) for c in changes]


# --- create, re-apply, change ---------------------------------------------------


def test_a_new_set_is_created_at_generation_one(state: store.StateStore, tenant: store.Tenant) -> None:
    result = applier.apply(state, tenant.id, full_set(), apply_set="git")

    assert actions(result) == [
        ("created", "Policy", "guard"),
        ("created", "Operator", "ship-risk"),
        ("created", "Connector", "magento"),
        ("created", "Webhook", "ops-channel"),
    ]
    assert result.changed and not result.dry_run
    assert result.warnings == []
    for change in result.changes:
        stored = state.get_object(tenant.id, change.kind, change.name)
        assert (stored.id, stored.generation, change.generation) == (change.id, 1, 1)
        assert stored.apply_set == "git"
    assert state.get_object(tenant.id, "Operator", "ship-risk").spec["policy"] == "guard"
    assert state.get_object(tenant.id, "Connector", "magento").id == "cn_magento"


def test_applying_the_same_set_again_changes_nothing(state: store.StateStore, tenant: store.Tenant) -> None:
    applier.apply(state, tenant.id, full_set(), apply_set="git")
    before = everything(state, tenant)

    result = applier.apply(state, tenant.id, full_set(), apply_set="git")

    assert {c.action for c in result.changes} == {"unchanged"}
    assert not result.changed
    assert [(c.id, c.generation) for c in result.changes] == [(o.id, 1) for o in before]
    # Not rewritten at all: same generation, same updated_at, same everything.
    assert everything(state, tenant) == before


def test_reordered_keys_are_not_a_change(state: store.StateStore, tenant: store.Tenant) -> None:
    applier.apply(state, tenant.id,
                  load(connector(capabilities="{orders.hold: hold, orders.notify: notify}")))
    result = applier.apply(
        state, tenant.id, load(connector(capabilities="{orders.notify: notify, orders.hold: hold}"))
    )
    assert summary(result.changes) == [("unchanged", "Connector", "magento", 1)]


def test_a_spec_stored_before_a_field_was_added_is_not_a_change(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    """After an upgrade, re-applying the same files must not move every generation (GitOps diffs)."""
    applier.apply(state, tenant.id, load(policy(), operator()))
    stored = state.get_object(tenant.id, "Operator", "ship-risk")
    older = {k: v for k, v in stored.spec.items() if k not in ("plan_ttl_seconds", "sensitive", "purpose")}
    with state.tenant_transaction(tenant.id) as tx:  # what the release before those fields stored
        tx.update(stored, older, stored.labels)
    before = state.get_object(tenant.id, "Operator", "ship-risk")
    assert before.generation == 2 and before.spec == older

    result = applier.apply(state, tenant.id, load(policy(), operator()))
    assert summary(result.changes) == [("unchanged", "Policy", "guard", 1),
                                       ("unchanged", "Operator", "ship-risk", 2)]
    assert state.get_object(tenant.id, "Operator", "ship-risk") == before

    changed = applier.apply(state, tenant.id, load(policy(), operator(labels="{team: ops}")))
    assert summary(changed.changes)[1] == ("configured", "Operator", "ship-risk", 2)  # labels alone
    real = applier.apply(state, tenant.id, load(policy(), operator(capabilities="[orders.notify]")))
    assert summary(real.changes)[1] == ("configured", "Operator", "ship-risk", 3)


def test_a_spec_change_is_configured_at_the_next_generation(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    applier.apply(state, tenant.id, full_set(), apply_set="git")
    untouched = state.get_object(tenant.id, "Policy", "guard")

    result = applier.apply(
        state, tenant.id,
        load(policy(), operator(capabilities="[orders.hold, orders.notify]"), connector(), webhook()),
        apply_set="git",
    )

    assert summary(result.changes) == [
        ("unchanged", "Policy", "guard", 1),
        ("configured", "Operator", "ship-risk", 2),
        ("unchanged", "Connector", "magento", 1),
        ("unchanged", "Webhook", "ops-channel", 1),
    ]
    stored = state.get_object(tenant.id, "Operator", "ship-risk")
    assert (stored.generation, stored.spec["capabilities"]) == (2, ["orders.hold", "orders.notify"])
    assert state.get_object(tenant.id, "Policy", "guard") == untouched

    again = applier.apply(
        state, tenant.id, load(policy(decision="BLOCK"), operator(capabilities="[orders.notify]"))
    )
    assert summary(again.changes) == [
        ("configured", "Policy", "guard", 2),
        ("configured", "Operator", "ship-risk", 3),
    ]


def test_a_labels_only_change_keeps_the_generation(state: store.StateStore, tenant: store.Tenant) -> None:
    applier.apply(state, tenant.id, load(policy(), operator(labels="{team: ops}")))
    before = state.get_object(tenant.id, "Operator", "ship-risk")

    result = applier.apply(state, tenant.id, load(policy(), operator(labels="{team: sre, tier: gold}")))

    assert summary(result.changes) == [
        ("unchanged", "Policy", "guard", 1),
        ("configured", "Operator", "ship-risk", 1),
    ]
    after = state.get_object(tenant.id, "Operator", "ship-risk")
    assert after.labels == {"team": "sre", "tier": "gold"}
    assert (after.generation, after.spec, after.id) == (1, before.spec, before.id)


def test_an_unknown_tenant_is_not_found(state: store.StateStore) -> None:
    with pytest.raises(errors.NotFound):
        applier.apply(state, "t_0000000000000000", full_set())


# --- checks: all or nothing --------------------------------------------------------


def test_a_dangling_policy_reference_is_invalid_and_writes_nothing(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    with pytest.raises(errors.SpecInvalid) as caught:
        applier.apply(state, tenant.id, load(operator(policy="missing")))

    [problem] = caught.value.problems
    assert (problem.path, problem.file, problem.line) == ("spec.policy", "specs.yaml", 8)
    assert "missing" in problem.message
    assert everything(state, tenant) == []


def test_one_bad_document_among_valid_ones_writes_none(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    batch = load(
        policy(), operator(), connector(), webhook(), operator("second"),
        operator("orphan", policy="nowhere"),
    )
    assert len(batch) == 6
    with pytest.raises(errors.SpecInvalid, match="nowhere"):
        applier.apply(state, tenant.id, batch, apply_set="git")
    assert everything(state, tenant) == []


def test_a_failure_after_writes_began_rolls_them_back(state: store.StateStore, tenant: store.Tenant) -> None:
    applier.apply(state, tenant.id, load(webhook("existing")))
    before = everything(state, tenant)

    # The conflict is found only when the write loop reaches the last document.
    with pytest.raises(errors.Conflict, match="existing"):
        applier.apply(state, tenant.id, load(policy(), operator(), webhook("existing")), create_only=True)

    assert everything(state, tenant) == before


def test_a_live_policy_satisfies_an_operators_reference(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    applier.apply(state, tenant.id, load(policy()))  # e.g. created through the API
    result = applier.apply(state, tenant.id, load(operator()), apply_set="git")
    assert actions(result) == [("created", "Operator", "ship-risk")]


def test_another_tenants_policy_does_not_satisfy_a_reference(
    state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant
) -> None:
    applier.apply(state, other_tenant.id, load(policy()))
    with pytest.raises(errors.SpecInvalid, match="guard"):
        applier.apply(state, tenant.id, load(operator()))
    assert everything(state, tenant) == []


def test_duplicates_in_one_batch_are_invalid(state: store.StateStore, tenant: store.Tenant) -> None:
    with pytest.raises(errors.SpecInvalid) as caught:
        applier.apply(state, tenant.id, load(policy(), operator(), policy(decision="BLOCK")))
    [problem] = caught.value.problems
    assert problem.path == "metadata.name"
    assert "duplicate Policy 'guard'" in problem.message
    assert everything(state, tenant) == []


def test_the_same_name_in_two_kinds_is_not_a_duplicate(state: store.StateStore, tenant: store.Tenant) -> None:
    result = applier.apply(state, tenant.id, load(policy("shared"), webhook("shared")))
    assert actions(result) == [("created", "Policy", "shared"), ("created", "Webhook", "shared")]


def test_capabilities_no_connector_fulfils_are_warnings_not_errors(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    result = applier.apply(state, tenant.id, load(policy(), operator(capabilities="[orders.hold, crm.call]")))
    assert [w.path for w in result.warnings] == ["spec.capabilities[0]", "spec.capabilities[1]"]
    assert len(everything(state, tenant)) == 2

    # A connector already live fulfils them.
    applier.apply(state, tenant.id, load(connector(capabilities="{orders.hold: hold, crm.call: call}")))
    again = applier.apply(state, tenant.id, load(policy(), operator(capabilities="[orders.hold, crm.call]")))
    assert again.warnings == []


def test_an_unresolved_policy_file_is_invalid_naming_the_field(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path
) -> None:
    (tmp_path / "guard.rego").write_text("package fibric.guard\ndecision := {}\n", encoding="utf-8")
    (tmp_path / "guard_test.rego").write_text("package fibric.guard_test\n", encoding="utf-8")
    (tmp_path / "specs.yaml").write_text(
        "apiVersion: fibric.io/v1\nkind: Policy\nmetadata: {name: guard}\n"
        "spec:\n  rego_file: guard.rego\n  tests: [guard_test.rego]\n",
        encoding="utf-8",
    )
    loaded = specs.load_paths([tmp_path / "specs.yaml"])

    with pytest.raises(errors.SpecInvalid) as caught:
        applier.apply(state, tenant.id, loaded)
    assert [p.path for p in caught.value.problems] == ["spec.rego_file"]
    assert everything(state, tenant) == []

    result = applier.apply(state, tenant.id, [specs.resolve(i) for i in loaded])
    assert actions(result) == [("created", "Policy", "guard")]
    stored = state.get_object(tenant.id, "Policy", "guard")
    assert stored.spec["rego"].startswith("package fibric.guard")
    assert stored.spec["rego_file"] is None


def test_unresolved_policy_tests_are_invalid_naming_the_field(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    text = policy() + "  tests: [guard_test.rego]\n"
    with pytest.raises(errors.SpecInvalid) as caught:
        applier.apply(state, tenant.id, load(text))
    assert [p.path for p in caught.value.problems] == ["spec.tests"]
    assert everything(state, tenant) == []


# --- prune ----------------------------------------------------------------------


def test_prune_deletes_only_what_left_the_same_set(
    state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant
) -> None:
    applier.apply(state, tenant.id, full_set(), apply_set="git")
    applier.apply(state, tenant.id, load(webhook("by-api")))  # no apply set: created through the API
    applier.apply(state, tenant.id, load(webhook("other-repo")), apply_set="other")
    applier.apply(state, other_tenant.id, full_set(), apply_set="git")
    gone = state.get_object(tenant.id, "Webhook", "ops-channel")

    kept = load(policy(), operator(), connector())
    result = applier.apply(state, tenant.id, kept, apply_set="git", prune=True)

    assert summary(result.changes) == [
        ("unchanged", "Policy", "guard", 1),
        ("unchanged", "Operator", "ship-risk", 1),
        ("unchanged", "Connector", "magento", 1),
        ("pruned", "Webhook", "ops-channel", 1),
    ]
    assert result.changes[-1].id == gone.id
    assert sorted(o.name for o in state.list_objects(tenant.id, "Webhook")) == ["by-api", "other-repo"]
    assert len(everything(state, other_tenant)) == 4


def test_without_prune_objects_that_left_the_set_stay(state: store.StateStore, tenant: store.Tenant) -> None:
    applier.apply(state, tenant.id, full_set(), apply_set="git")
    result = applier.apply(state, tenant.id, load(policy()), apply_set="git")
    assert actions(result) == [("unchanged", "Policy", "guard")]
    assert len(everything(state, tenant)) == 4


def test_prune_needs_an_apply_set(state: store.StateStore, tenant: store.Tenant) -> None:
    applier.apply(state, tenant.id, load(webhook("by-api")))
    for apply_set in (None, ""):
        with pytest.raises(errors.SpecInvalid) as caught:
            applier.apply(state, tenant.id, [], apply_set=apply_set, prune=True)
        assert [p.path for p in caught.value.problems] == ["apply_set"]
    assert [o.name for o in everything(state, tenant)] == ["by-api"]


def test_prune_refuses_to_delete_a_policy_still_bound_to_an_operator(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    applier.apply(state, tenant.id, load(policy(), webhook()), apply_set="git")
    applier.apply(state, tenant.id, load(operator()))  # an API-created operator bound to the set's policy
    before = everything(state, tenant)

    with pytest.raises(errors.SpecInvalid) as caught:
        applier.apply(state, tenant.id, load(webhook()), apply_set="git", prune=True)

    [problem] = caught.value.problems
    assert problem.path == "spec.policy"
    assert "guard" in problem.message and "ship-risk" in problem.message
    assert everything(state, tenant) == before


def test_prune_may_delete_a_policy_together_with_its_operators(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    applier.apply(state, tenant.id, full_set(), apply_set="git")
    result = applier.apply(state, tenant.id, load(connector()), apply_set="git", prune=True)
    assert sorted(actions(result)) == [
        ("pruned", "Operator", "ship-risk"),
        ("pruned", "Policy", "guard"),
        ("pruned", "Webhook", "ops-channel"),
        ("unchanged", "Connector", "magento"),
    ]
    assert [o.name for o in everything(state, tenant)] == ["magento"]


def test_an_operator_kept_in_the_set_needs_its_policy_to_stay(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    applier.apply(state, tenant.id, full_set(), apply_set="git")
    with pytest.raises(errors.SpecInvalid, match="guard"):
        applier.apply(state, tenant.id, load(operator(), connector()), apply_set="git", prune=True)
    assert len(everything(state, tenant)) == 4


# --- dry run, create_only -------------------------------------------------------


def test_a_dry_run_writes_nothing_and_predicts_the_real_apply(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    applier.apply(state, tenant.id, full_set(), apply_set="git")
    before = everything(state, tenant)
    changed = load(
        policy(), operator(capabilities="[orders.notify]", labels="{team: sre}"), operator("second"),
        connector(),
    )

    predicted = applier.apply(state, tenant.id, changed, apply_set="git", prune=True, dry_run=True)

    assert predicted.dry_run
    assert everything(state, tenant) == before
    real = applier.apply(state, tenant.id, changed, apply_set="git", prune=True)
    assert summary(predicted.changes) == summary(real.changes) == [
        ("unchanged", "Policy", "guard", 1),
        ("configured", "Operator", "ship-risk", 2),
        ("created", "Operator", "second", 1),
        ("unchanged", "Connector", "magento", 1),
        ("pruned", "Webhook", "ops-channel", 1),
    ]
    assert [c.id for c in predicted.changes] == [
        c.id if c.action != "created" else None for c in real.changes
    ]


def test_a_dry_run_of_a_new_set_creates_nothing(state: store.StateStore, tenant: store.Tenant) -> None:
    predicted = applier.apply(state, tenant.id, full_set(), apply_set="git", dry_run=True)
    assert {c.action for c in predicted.changes} == {"created"}
    assert all(c.signing_secret is None for c in predicted.changes)
    assert everything(state, tenant) == []
    real = applier.apply(state, tenant.id, full_set(), apply_set="git")
    assert summary(predicted.changes) == summary(real.changes)


def test_a_dry_run_still_refuses_an_invalid_set(state: store.StateStore, tenant: store.Tenant) -> None:
    with pytest.raises(errors.SpecInvalid):
        applier.apply(state, tenant.id, load(operator()), dry_run=True)


def test_create_only_refuses_an_existing_name(state: store.StateStore, tenant: store.Tenant) -> None:
    applier.apply(state, tenant.id, load(policy()))
    before = everything(state, tenant)

    with pytest.raises(errors.Conflict, match="guard"):
        applier.apply(state, tenant.id, load(policy(decision="BLOCK")), create_only=True)

    assert everything(state, tenant) == before
    result = applier.apply(state, tenant.id, load(operator()), create_only=True)
    assert actions(result) == [("created", "Operator", "ship-risk")]


# --- webhook signing secrets ----------------------------------------------------


def stored_secret(state: store.StateStore, tenant: store.Tenant) -> str:
    """The webhook's signing secret as stored: sealed, never in plaintext (fibric/store/secretbox.py)."""
    sealed = state.get_object(tenant.id, "Webhook", "ops-channel").secret
    assert sealed is not None and sealed.startswith(secretbox.SEALED_PREFIX)
    return applier.Options().sealer(state).open(sealed, tenant.id)


def test_a_webhook_without_secret_env_gets_a_signing_secret_once(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    [created] = applier.apply(state, tenant.id, load(webhook())).changes

    assert created.signing_secret is not None
    assert created.signing_secret.startswith(applier.SECRET_PREFIX)
    assert len(created.signing_secret) >= len(applier.SECRET_PREFIX) + 32
    assert created.signing_secret not in repr(created)
    assert stored_secret(state, tenant) == created.signing_secret

    [unchanged] = applier.apply(state, tenant.id, load(webhook())).changes
    [configured] = applier.apply(state, tenant.id, load(webhook(extra="  enabled: false\n"))).changes
    assert (unchanged.action, unchanged.signing_secret) == ("unchanged", None)
    assert (configured.action, configured.signing_secret) == ("configured", None)
    assert stored_secret(state, tenant) == created.signing_secret

    [other] = applier.apply(state, tenant.id, load(webhook("other"))).changes
    assert other.signing_secret not in (None, created.signing_secret)


def test_a_webhook_with_secret_env_gets_no_generated_secret(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    [created] = applier.apply(state, tenant.id, load(webhook(extra="  secret_env: OPS_HOOK_SECRET\n")),
                              origin=trust.Origin.INSTALLATION).changes
    assert created.signing_secret is None
    assert state.get_object(tenant.id, "Webhook", "ops-channel").secret is None


def test_a_webhook_that_drops_secret_env_gets_a_signing_secret(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    # Otherwise it would be left with nothing to sign deliveries with.
    applier.apply(state, tenant.id, load(webhook(extra="  secret_env: OPS_HOOK_SECRET\n")),
                  origin=trust.Origin.INSTALLATION)

    [configured] = applier.apply(state, tenant.id, load(webhook())).changes

    assert configured.action == "configured"
    assert configured.signing_secret is not None
    assert configured.signing_secret.startswith(applier.SECRET_PREFIX)
    assert stored_secret(state, tenant) == configured.signing_secret
    [again] = applier.apply(state, tenant.id, load(webhook())).changes
    assert (again.action, again.signing_secret) == ("unchanged", None)


# --- delete ---------------------------------------------------------------------


@pytest.mark.parametrize("by", ["id", "name"])
def test_delete_by_id_or_name(state: store.StateStore, tenant: store.Tenant, by: str) -> None:
    applier.apply(state, tenant.id, full_set())
    target = state.get_object(tenant.id, "Webhook", "ops-channel")

    change = applier.delete(state, tenant.id, "Webhook", target.id if by == "id" else target.name)

    assert summary([change]) == [("deleted", "Webhook", "ops-channel", 1)]
    assert change.id == target.id
    with pytest.raises(errors.NotFound):
        state.get_object(tenant.id, "Webhook", target.id)
    assert len(everything(state, tenant)) == 3


def test_a_policy_bound_to_an_operator_cannot_be_deleted(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    applier.apply(state, tenant.id, load(policy(), operator(), operator("second")))
    guard = state.get_object(tenant.id, "Policy", "guard")

    for ref in (guard.id, guard.name):
        with pytest.raises(errors.Conflict, match="second, ship-risk"):
            applier.delete(state, tenant.id, "Policy", ref)
    assert state.get_object(tenant.id, "Policy", "guard") == guard

    applier.delete(state, tenant.id, "Operator", "ship-risk")
    applier.delete(state, tenant.id, "Operator", "second")
    assert applier.delete(state, tenant.id, "Policy", "guard").action == "deleted"
    assert everything(state, tenant) == []


def test_deleting_an_unknown_or_foreign_object_is_not_found(
    state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant
) -> None:
    applier.apply(state, other_tenant.id, full_set())
    theirs = everything(state, other_tenant)

    for obj in theirs:
        for ref in (obj.id, obj.name):
            with pytest.raises(errors.NotFound):
                applier.delete(state, tenant.id, obj.kind, ref)
    for ref in ("ghost", "op_0000000000000000", "op_\x00"):
        with pytest.raises(errors.NotFound):
            applier.delete(state, tenant.id, "Operator", ref)
    with pytest.raises(errors.NotFound):
        applier.delete(state, tenant.id, "Policy", "ship-risk")  # an operator's name, wrong kind

    assert everything(state, other_tenant) == theirs


# --- concurrency ----------------------------------------------------------------


def test_concurrent_applies_of_one_set_create_each_object_once(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    appliers = 6
    barrier = threading.Barrier(appliers)

    def run() -> applier.ApplyResult:
        barrier.wait(timeout=10)
        return applier.apply(state, tenant.id, full_set(), apply_set="git", prune=True)

    with ThreadPoolExecutor(appliers) as pool:
        results = [f.result(timeout=30) for f in [pool.submit(run) for _ in range(appliers)]]

    stored = everything(state, tenant)
    assert sorted((o.kind, o.name, o.generation) for o in stored) == [
        ("Connector", "magento", 1), ("Operator", "ship-risk", 1),
        ("Policy", "guard", 1), ("Webhook", "ops-channel", 1),
    ]
    changes = [c for r in results for c in r.changes]
    assert sorted(c.action for c in changes) == ["created"] * 4 + ["unchanged"] * 4 * (appliers - 1)
    secrets = [c.signing_secret for c in changes if c.signing_secret]
    assert secrets == [stored_secret(state, tenant)]


def test_concurrent_applies_of_changing_specs_keep_the_generation_consistent(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    applier.apply(state, tenant.id, full_set(), apply_set="git")
    versions = [
        load(policy(), operator(capabilities="[orders.hold]"), connector()),
        load(policy(), operator(capabilities="[orders.notify]"), connector()),
    ]
    appliers, rounds = 4, 5
    barrier = threading.Barrier(appliers)

    def run(n: int) -> list[applier.ApplyResult]:
        barrier.wait(timeout=10)
        return [applier.apply(state, tenant.id, versions[(n + r) % 2], apply_set="git")
                for r in range(rounds)]

    with ThreadPoolExecutor(appliers) as pool:
        results = [r for f in [pool.submit(run, n) for n in range(appliers)] for r in f.result(timeout=30)]

    configured = [
        c for r in results for c in r.changes if (c.action, c.kind) == ("configured", "Operator")
    ]
    final = state.get_object(tenant.id, "Operator", "ship-risk")
    # Every reported bump happened exactly once, and each got its own generation.
    assert final.generation == 1 + len(configured)
    assert sorted(c.generation for c in configured) == list(range(2, final.generation + 1))
    assert final.spec["capabilities"] in (["orders.hold"], ["orders.notify"])
    assert [o.name for o in state.list_objects(tenant.id, "Operator")] == ["ship-risk"]
    assert state.get_object(tenant.id, "Policy", "guard").generation == 1
