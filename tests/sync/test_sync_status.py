"""Sync status: a failed apply of the served folder shows in `fibric status`, the API and the objects.

Before this, a bad save showed only in the server log while `get` still said
Ready. Each test serves a real folder with the real watcher and reads the
result over real HTTP, through the typed client and the `fibric` command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sync_support import BAD_OPERATOR, OPERATOR, SET, condition, eventually, fibric, watching

from fibric import client, settings, store
from fibric.controller import watch


def sync_of(api: client.Client) -> dict[str, Any]:
    return api.get_sync(SET)


def attempted(api: client.Client, result: str) -> dict[str, Any] | None:
    """The set's status once its last attempt has `result`."""
    try:
        found = sync_of(api)
    except client.ApiError:
        return None
    return found if found["result"] == result else None


def in_sync(api: client.Client) -> dict[str, Any] | None:
    """The set's status once it applied and nothing has drifted."""
    found = attempted(api, "applied")
    return found if found is not None and not found["drift"] else None


def test_a_failed_apply_shows_in_status_and_on_the_objects_until_a_good_one(
    state: store.StateStore, tenant: store.Tenant, folder: Path, api: client.Client, env: dict[str, str],
) -> None:
    with watching(state, tenant, folder):
        good = eventually(lambda: attempted(api, "applied"), "the first apply")
        assert good["error"] is None and good["revision"].startswith("sha256:")
        assert good["revision"] == good["attempted_revision"]

        (folder / "operator.yaml").write_text(BAD_OPERATOR)
        bad = eventually(lambda: attempted(api, "failed"), "the bad save to be recorded")
        assert "operator.yaml:7" in bad["error"] and "colour" in bad["error"]
        assert bad["revision"] == good["revision"]  # the last good state stays live
        assert bad["attempted_revision"] != good["revision"]
        assert bad["applied_at"] == good["applied_at"]

        # Every object of the set says so, with the reason, beside its Ready condition.
        for kind, name in (("Operator", "ship-risk"), ("Policy", "guard"), ("Connector", "magento")):
            synced = condition(api.get_object(kind, name), "Synced")
            assert synced is not None and synced["status"] == "False", (kind, synced)
            assert synced["reason"] == "ApplyFailed"
            assert synced["message"].startswith("specs not applied: ")
            assert "operator.yaml:7" in synced["message"]

        listed = api.list_sync()
        assert [(s["apply_set"], s["result"]) for s in listed] == [(SET, "failed")]

        shown = fibric(["status"], env)
        assert shown.exit_code == 0, shown.output
        assert "failed" in shown.stdout and "operator.yaml:7" in shown.stdout
        assert good["revision"] in shown.stdout

        described = fibric(["describe", "operator", "ship-risk"], env)
        assert described.exit_code == 0, described.output
        assert "Synced" in described.stdout and "ApplyFailed" in described.stdout
        assert "Last error:" in described.stdout and "operator.yaml:7" in described.stdout
        assert "Recent runs:" in described.stdout

        (folder / "operator.yaml").write_text(OPERATOR + "  lifecycle: paused\n")
        fixed = eventually(lambda: attempted(api, "applied"), "the fix to apply")
        assert fixed["error"] is None and fixed["revision"] == fixed["attempted_revision"] != good["revision"]
        synced = eventually(
            lambda: (c := condition(api.get_object("Operator", "ship-risk"), "Synced")) and
            c["status"] == "True" and c, "Synced to turn True again")
        assert synced["reason"] == "Applied"
        assert synced["message"] == "apply set 'serve' applied (fibric status)"
        now = fibric(["status"], env).stdout
        assert " applied " in now and "last attempt" not in now


def test_another_tenants_apply_set_reads_as_not_found(
    state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant, folder: Path,
    api: client.Client, env: dict[str, str],
) -> None:
    watch.apply_folder(state, tenant.id, folder, SET)
    assert sync_of(api)["result"] == "applied"
    _, secret = state.create_api_key(other_tenant.id, frozenset(store.SCOPES))
    theirs = {**env, "FIBRIC_KEY": secret}
    for path in (f"/v1/sync/{SET}", "/v1/sync/never-applied", "/v1/sync/Not%20A%20Set"):
        answer = httpx.get(env["FIBRIC_URL"] + path, headers={"Authorization": f"Bearer {secret}"})
        assert answer.status_code == 404, answer.text
        error = answer.json()["error"]
        assert error["code"] == "not_found" and error["request_id"].startswith("req_")
        assert answer.headers["Request-Id"] == error["request_id"]
    assert httpx.get(env["FIBRIC_URL"] + "/v1/sync",
                     headers={"Authorization": f"Bearer {secret}"}).json()["data"] == []
    shown = fibric(["status", SET], theirs)
    assert shown.exit_code != 0 and "No such apply set" in shown.output


def test_reading_sync_status_needs_the_read_scope_of_every_kind(
    state: store.StateStore, tenant: store.Tenant, folder: Path, env: dict[str, str],
) -> None:
    watch.apply_folder(state, tenant.id, folder, SET)
    _, secret = state.create_api_key(tenant.id, frozenset({"operators:read"}))
    answer = httpx.get(env["FIBRIC_URL"] + f"/v1/sync/{SET}", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "insufficient_scope"


def git(folder: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          cwd=folder, capture_output=True, text=True, check=True, timeout=30)
    return done.stdout.strip()


def test_the_git_commit_of_a_folder_in_a_repository_is_its_revision(
    state: store.StateStore, tenant: store.Tenant, folder: Path, api: client.Client,
) -> None:
    repo = folder.parent
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "specs")
    head = git(repo, "rev-parse", "HEAD")
    watch.apply_folder(state, tenant.id, folder, SET)
    assert sync_of(api)["revision"] == head

    # An edit not yet committed is not that commit: said so rather than passed off as it.
    (folder / "operator.yaml").write_text(OPERATOR + "  lifecycle: paused\n")
    watch.apply_folder(state, tenant.id, folder, SET)
    assert sync_of(api)["revision"] == f"{head}-dirty"


def test_an_out_of_band_delete_is_reported_as_drift(
    state: store.StateStore, tenant: store.Tenant, folder: Path, api: client.Client, env: dict[str, str],
) -> None:
    with watching(state, tenant, folder):
        eventually(lambda: attempted(api, "applied"), "the first apply")
        api.delete("Operator", "ship-risk")
        found = eventually(lambda: sync_of(api)["drift"], "the delete to be reported")
        assert found == [{"kind": "Operator", "name": "ship-risk", "change": "deleted"}]
        assert sync_of(api)["drift_checked_at"] is not None
        # Self-heal is off: the object stays deleted, and `status` says what drifted.
        with pytest.raises(client.ApiError):
            api.get_object("Operator", "ship-risk")
        shown = fibric(["status"], env)
        assert "drift: operator/ship-risk deleted" in shown.stdout

        allow = "package fibric.guard\n\ndefault decision := {\"decision\": \"ALLOW\"}\n"
        api.apply([{"apiVersion": "fibric.io/v1", "kind": "Policy", "metadata": {"name": "guard"},
                    "spec": {"rego": allow}}])
        changed = eventually(lambda: len(sync_of(api)["drift"]) == 2 and sync_of(api)["drift"],
                             "the change to be reported")
        assert {"kind": "Policy", "name": "guard", "change": "changed"} in changed


def test_self_heal_applies_the_folder_again_after_an_out_of_band_delete(
    state: store.StateStore, tenant: store.Tenant, folder: Path, api: client.Client,
) -> None:
    with watching(state, tenant, folder, self_heal=True):
        eventually(lambda: attempted(api, "applied"), "the first apply")
        api.delete("Operator", "ship-risk")
        eventually(lambda: "ship-risk" in {o["name"] for o in api.list_objects("Operator")}, "the re-apply")
        healed = eventually(lambda: in_sync(api), "the re-apply to be recorded")
        assert healed["drift_checked_at"] is not None
        assert api.get_object("Operator", "ship-risk")["name"] == "ship-risk"  # back as the folder has it

        # A folder that does not apply is not applied again and again: its drift is only reported.
        (folder / "operator.yaml").write_text(BAD_OPERATOR)
        bad = eventually(lambda: attempted(api, "failed"), "the bad save to be recorded")
        api.delete("Connector", "magento")
        eventually(lambda: sync_of(api)["drift"], "the delete to be reported")
        time.sleep(1)  # five idle checks
        assert sync_of(api)["attempted_at"] == bad["attempted_at"]
        with pytest.raises(client.ApiError):
            api.get_object("Connector", "magento")


def test_an_api_apply_with_an_apply_set_records_its_status(api: client.Client) -> None:
    policy = {"apiVersion": "fibric.io/v1", "kind": "Policy", "metadata": {"name": "guard"},
              "spec": {"rego": "package fibric.guard\n"}}
    api.apply([policy], apply_set="pipeline")
    good = api.get_sync("pipeline")
    assert good["result"] == "applied" and good["revision"].startswith("sha256:")

    with pytest.raises(client.ApiError):
        api.apply([{**policy, "spec": {"rego": "package"}}], apply_set="pipeline")
    bad = api.get_sync("pipeline")
    assert bad["result"] == "failed" and "documents[0]" in bad["error"]
    assert bad["revision"] == good["revision"]
    synced = condition(api.get_object("Policy", "guard"), "Synced")
    assert synced is not None and synced["status"] == "False"

    api.apply([policy], apply_set="pipeline", dry_run=True)  # a dry run is no attempt
    assert api.get_sync("pipeline")["result"] == "failed"


# `fibric status` and `describe` are client commands: they load the client, never the server stack.
CHILD = """
import json, sys
sys.argv[0] = "fibric"
from fibric import cli
try:
    cli.main()
finally:
    print("\\n" + json.dumps(sorted(n for n, m in sys.modules.items() if m is not None)), file=sys.stderr)
"""
SERVER = ("fibric.api", "fibric.controller", "fibric.store", "fibric.specs", "fastapi", "uvicorn", "psycopg",
          "regopy", "duckdb", "watchfiles", "pydantic")


@pytest.mark.parametrize("args", [["status"], ["describe", "operator", "ship-risk"]])
def test_status_and_describe_load_no_server_code(
    state: store.StateStore, tenant: store.Tenant, folder: Path, env: dict[str, str], args: list[str],
) -> None:
    watch.apply_folder(state, tenant.id, folder, SET)
    base = {k: v for k, v in os.environ.items() if not k.startswith("FIBRIC_")}
    done = subprocess.run([sys.executable, "-c", CHILD, *args], env={**base, **env}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert SET in done.stdout
    modules = json.loads(done.stderr.rstrip("\n").rsplit("\n", 1)[-1])
    assert "fibric.client" in modules
    assert [m for m in modules if m.startswith(SERVER)] == []


def test_self_heal_is_off_unless_set_on_and_a_bad_value_names_the_variable() -> None:
    assert settings.Settings.from_env({}).controller.sync_self_heal is False
    assert settings.Settings.from_env({"FIBRIC_SYNC_SELF_HEAL": "on"}).controller.sync_self_heal is True
    with pytest.raises(ValueError, match="FIBRIC_SYNC_SELF_HEAL must be on or off, not 'maybe'"):
        settings.Settings.from_env({"FIBRIC_SYNC_SELF_HEAL": "maybe"})
