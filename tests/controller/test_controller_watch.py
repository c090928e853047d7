"""Serving a specs folder: apply with prune, re-apply on save, keep the last good state on a bad edit.

watchfiles watches a real folder under tmp_path; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from controller_support import connector, eventually, operator, policy, run

from fibric import errors, specs, store
from fibric.controller import applier, apply_folder, watch_folder

SET = "serve"

POLICY_FILE = """\
apiVersion: fibric.io/v1
kind: Policy
metadata: {name: guard}
spec:
  rego_file: ../policies/guard.rego
"""
REGO = "package fibric.guard\n\ndefault decision := {\"decision\": \"BLOCK\", \"rule\": \"deny\"}\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A GitOps layout: specs/ beside policies/, with a policy, a connector and an operator."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "guard.rego").write_text(REGO)
    specs_dir = tmp_path / "specs"
    specs_dir.mkdir()
    (specs_dir / "policy.yaml").write_text(POLICY_FILE)
    (specs_dir / "connector.yaml").write_text(connector())
    (specs_dir / "operator.yaml").write_text(operator())
    return specs_dir


def names(state: store.StateStore, tenant: store.Tenant, kind: str) -> set[str]:
    return {o.name for o in state.list_objects(tenant.id, kind)}


def test_apply_folder_applies_resolves_policy_files_and_prunes(
    state: store.StateStore, tenant: store.Tenant, folder: Path
) -> None:
    result = apply_folder(state, tenant.id, folder, SET)
    assert sorted(c.action for c in result.changes) == ["created", "created", "created"]
    assert state.get_object(tenant.id, "Policy", "guard").spec["rego"] == REGO
    assert state.get_object(tenant.id, "Operator", "ship-risk").apply_set == SET

    (folder / "operator.yaml").unlink()
    result = apply_folder(state, tenant.id, folder, SET)
    assert [(c.action, c.name) for c in result.changes if c.action != "unchanged"] == [
        ("pruned", "ship-risk")]
    assert names(state, tenant, "Operator") == set()


def test_apply_folder_never_prunes_objects_created_outside_the_set(
    state: store.StateStore, tenant: store.Tenant, folder: Path
) -> None:
    # As the API would: no apply set.
    applier.apply(state, tenant.id, specs.load_text(policy("api-made"), "api"))
    apply_folder(state, tenant.id, folder, SET)
    assert names(state, tenant, "Policy") == {"guard", "api-made"}


def test_a_bad_folder_changes_nothing(state: store.StateStore, tenant: store.Tenant, folder: Path) -> None:
    apply_folder(state, tenant.id, folder, SET)
    (folder / "operator.yaml").write_text(operator(name="other") + "  bad: [unclosed\n")
    with pytest.raises(errors.SpecInvalid) as caught:
        apply_folder(state, tenant.id, folder, SET)
    assert "operator.yaml:" in str(caught.value)
    assert names(state, tenant, "Operator") == {"ship-risk"}


def test_watch_folder_follows_edits_and_keeps_the_last_good_state(
    state: store.StateStore, tenant: store.Tenant, folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    apply_folder(state, tenant.id, folder, SET)  # what serve does before watching
    applied: list[applier.ApplyResult] = []

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            watch_folder(state, tenant.id, folder, SET, applied.append, stop, debounce_ms=200)
        )
        try:
            # The watcher starts asynchronously: keep saving until it sees a save.
            deadline = time.monotonic() + 5
            while not applied and time.monotonic() < deadline:
                (folder / "webhook.yaml").write_text(
                    "apiVersion: fibric.io/v1\nkind: Webhook\nmetadata: {name: hook}\n"
                    "spec: {url: 'https://acme.example/h', events: [plan.proposed]}\n"
                )
                await asyncio.sleep(0.3)
            assert "hook" in names(state, tenant, "Webhook")
            created = [c for r in applied for c in r.changes if c.action == "created"]
            assert [(c.kind, c.name) for c in created] == [("Webhook", "hook")]

            # A bad edit: logged with file:line, and nothing changes.
            (folder / "operator.yaml").write_text(operator(name="renamed") + "  oops: [\n")
            await eventually(lambda: "not applied" in caplog.text, what="the bad edit to be logged")
            assert "operator.yaml:" in caplog.text
            assert names(state, tenant, "Operator") == {"ship-risk"}

            # Fixing it applies the folder as it now stands (the rename prunes the old one).
            (folder / "operator.yaml").write_text(operator(name="renamed"))
            await eventually(lambda: names(state, tenant, "Operator") == {"renamed"},
                             what="the fixed edit to apply")

            # Editing the Rego file the policy points at reloads the policy.
            (folder.parent / "policies" / "guard.rego").write_text(REGO + "# v2\n")
            await eventually(
                lambda: state.get_object(tenant.id, "Policy", "guard").spec["rego"].endswith("# v2\n"),
                what="the Rego edit to apply",
            )
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)

    with caplog.at_level(logging.INFO, logger="fibric.controller.watch"):
        run(scenario(), timeout=30)


def test_an_edit_saved_before_the_watcher_runs_is_not_missed(
    state: store.StateStore, tenant: store.Tenant, folder: Path
) -> None:
    apply_folder(state, tenant.id, folder, SET)
    # Saved after serve's start-up apply but before the watcher is watching: no event will come.
    (folder / "operator.yaml").write_text(operator(name="late"))

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            watch_folder(state, tenant.id, folder, SET, lambda _: None, stop,
                         debounce_ms=100, idle_check_ms=200)
        )
        try:
            await eventually(lambda: names(state, tenant, "Operator") == {"late"},
                             what="the early edit to apply")
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)

    run(scenario(), timeout=20)
