"""apply, diff, get, delete and export against a real API server over a real store (both backends)."""

from __future__ import annotations

import json
from pathlib import Path

from cli_support import line_of, run

Env = dict[str, str | None]


def apply(env: Env, *args: str) -> list[str]:
    result = run(["apply", *args], env)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_the_gitops_loop(repo: Path, api_env: Env, tmp_path: Path) -> None:
    # apply: everything created; the webhook's new secret is not printed (test_cli_secrets.py)
    lines = apply(api_env, "-f", str(repo))
    assert lines == ["connector/magento created", "operator/ship-risk created", "policy/guard created",
                     "webhook/ops-channel created"]

    # get
    table = run(["get", "operators"], api_env)
    assert table.exit_code == 0, table.output
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "STATUS", "POLICY", "CAPABILITIES", "READY", "AGE"]
    assert row.split()[:5] == ["ship-risk", row.split()[1], "active", "guard", "orders.hold"]
    assert row.split()[1].startswith("op_")

    # diff: no drift
    clean = run(["diff", "-f", str(repo)], api_env)
    assert (clean.exit_code, clean.stdout) == (0, ""), clean.output

    # edit a file: diff shows it and exits 1
    operator = repo / "operator.yaml"
    operator.write_text(operator.read_text().replace("team: ops", "team: sre"))
    drift = run(["diff", "-f", str(repo)], api_env)
    assert drift.exit_code == 1, drift.output
    assert "--- live/operator/ship-risk\n+++ local/operator/ship-risk\n" in drift.stdout
    assert "-    team: ops\n+    team: sre\n" in drift.stdout
    assert "webhook" not in drift.stdout

    # apply the edit: one object configured, the rest unchanged, no secret again
    lines = apply(api_env, "-f", str(repo))
    assert "operator/ship-risk configured" in lines
    assert sum(line.endswith(" unchanged") for line in lines) == 3
    assert not any("secret" in line for line in lines)
    assert run(["diff", "-f", str(repo)], api_env).exit_code == 0

    # export re-applies with no change
    exported = run(["export"], api_env)
    assert exported.exit_code == 0, exported.output
    assert "fibric.io/" not in exported.stdout.replace("apiVersion: fibric.io/v1", "")
    assert "status" not in exported.stdout and "op_" not in exported.stdout
    assert "rego: |" in exported.stdout  # the policy travels with its source inline
    export_file = tmp_path / "export.yaml"
    export_file.write_text(exported.stdout)
    lines = apply(api_env, "-f", str(export_file))
    assert len(lines) == 4 and all(line.endswith(" unchanged") for line in lines), lines
    assert run(["diff", "-f", str(export_file)], api_env).exit_code == 0
    assert run(["diff", "-f", str(repo)], api_env).exit_code == 0

    # prune: a document leaves Git, diff shows the object going, apply --prune deletes it
    (repo / "webhook.yaml").unlink()
    going = run(["diff", "-f", str(repo)], api_env)
    assert going.exit_code == 1
    assert "--- live/webhook/ops-channel\n+++ /dev/null\n" in going.stdout
    no_prune = apply(api_env, "-f", str(repo))
    assert not any("pruned" in line for line in no_prune)
    lines = apply(api_env, "-f", str(repo), "--prune")
    assert "webhook/ops-channel pruned" in lines
    webhooks = run(["get", "webhooks", "-o", "json"], api_env)
    assert json.loads(webhooks.stdout) == []
    assert run(["diff", "-f", str(repo)], api_env).exit_code == 0


def test_dry_run_changes_nothing(repo: Path, api_env: Env) -> None:
    lines = apply(api_env, "-f", str(repo), "--dry-run")
    assert "operator/ship-risk created (dry run)" in lines
    assert not any("secret" in line for line in lines)
    assert json.loads(run(["get", "operators", "-o", "json"], api_env).stdout) == []
    assert run(["diff", "-f", str(repo)], api_env).exit_code == 1


def test_prune_only_touches_its_own_apply_set(repo: Path, api_env: Env, tmp_path: Path) -> None:
    apply(api_env, "-f", str(repo), "--apply-set", "team-a")
    other = tmp_path / "other.yaml"
    other.write_text((repo / "webhook.yaml").read_text().replace("ops-channel", "audit"))
    apply(api_env, "-f", str(other), "--apply-set", "team-b")
    (repo / "webhook.yaml").unlink()
    lines = apply(api_env, "-f", str(repo), "--apply-set", "team-a", "--prune")
    assert "webhook/ops-channel pruned" in lines
    assert not any("audit" in line for line in lines)
    names = [w["name"] for w in json.loads(run(["get", "webhooks", "-o", "json"], api_env).stdout)]
    assert names == ["audit"]


def test_apply_is_all_or_nothing_on_a_dangling_reference(repo: Path, api_env: Env) -> None:
    operator = repo / "operator.yaml"
    operator.write_text(operator.read_text().replace("policy: guard", "policy: nope"))

    result = run(["apply", "-f", str(repo)], api_env)

    assert result.exit_code == 2
    line = line_of(operator, "policy: nope")
    assert f"{operator}:{line}:3: spec.policy: policy 'nope' does not exist" in result.stderr.splitlines()
    assert "nothing was applied" in result.stderr
    assert "Traceback" not in result.output
    for kind in ("operators", "policies", "connectors", "webhooks"):
        assert json.loads(run(["get", kind, "-o", "json"], api_env).stdout) == []


def test_apply_refers_to_live_objects_not_in_the_files(repo: Path, api_env: Env) -> None:
    apply(api_env, "-f", str(repo / "policy.yaml"))
    lines = apply(api_env, "-f", str(repo / "operator.yaml"))  # its policy is live, not in the file
    assert lines == ["operator/ship-risk created"]


def test_server_warnings_point_at_the_file(repo: Path, api_env: Env) -> None:
    operator = repo / "operator.yaml"
    operator.write_text(operator.read_text().replace("[orders.hold]", "[orders.hold, orders.ship]"))
    result = run(["apply", "-f", str(repo)], api_env)
    assert result.exit_code == 0, result.output
    line = line_of(operator, "orders.ship")
    assert (f"warning: {operator}:{line}:31: spec.capabilities[1]: "
            "no connector fulfils capability 'orders.ship'") in result.stderr.splitlines()


def test_invalid_files_are_never_sent(repo: Path) -> None:
    operator = repo / "operator.yaml"
    operator.write_text(operator.read_text().replace("subscribes:", "subscribez:"))
    # no server listens here: exit 2 with the file's problem proves nothing was sent
    env: Env = {"FIBRIC_URL": "http://127.0.0.1:9", "FIBRIC_KEY": "sk_live_unused"}
    expected = f"{operator}:{line_of(operator, 'subscribez')}:3: spec.subscribez: unknown field"
    for command in ("apply", "diff"):
        result = run([command, "-f", str(repo)], env)
        assert result.exit_code == 2
        assert expected in result.stderr
        assert "cannot reach" not in result.stderr


def test_get_shows_one_object_as_table_yaml_or_json(repo: Path, api_env: Env) -> None:
    apply(api_env, "-f", str(repo))

    table = run(["get", "connector", "magento"], api_env)
    assert table.exit_code == 0, table.output
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "KIND", "CONNECTION", "CAPABILITIES", "READY", "AGE"]
    assert row.split()[:5] == ["magento", "cn_magento", "saas", "disconnected", "orders.read,orders.hold"]

    as_json = json.loads(run(["get", "connectors", "magento", "-o", "json"], api_env).stdout)
    assert as_json["id"] == "cn_magento" and as_json["name"] == "Magento Orders"
    policy = json.loads(run(["get", "policy", "guard", "-o", "json"], api_env).stdout)
    assert policy["object"] == "policy" and policy["query"] == "data.fibric.guard.decision"

    as_yaml = run(["get", "Operator", "ship-risk", "-o", "yaml"], api_env)
    assert as_yaml.stdout == (
        "apiVersion: fibric.io/v1\nkind: Operator\nmetadata:\n  name: ship-risk\n  labels:\n"
        "    team: ops\nspec:\n  capabilities:\n  - orders.hold\n  policy: guard\n  subscribes:\n"
        "  - order.updated\n"
    )
    operator_id = json.loads(run(["get", "operators", "-o", "json"], api_env).stdout)[0]["id"]
    by_id = run(["get", "operators", operator_id], api_env)
    assert by_id.stdout.splitlines()[1].split()[:2] == ["ship-risk", operator_id]

    listing = run(["get", "webhooks"], api_env).stdout.splitlines()
    assert listing[0].split() == ["NAME", "ID", "URL", "EVENTS", "ENABLED", "READY", "AGE"]
    assert listing[1].split()[0] == "ops-channel"


def test_get_and_delete_report_missing_objects(repo: Path, api_env: Env) -> None:
    apply(api_env, "-f", str(repo))
    missing = run(["get", "operators", "nope"], api_env)
    assert missing.exit_code == 1
    assert "No such operator: 'nope' [404 not_found] (request req_" in missing.stderr

    bound = run(["delete", "policy", "guard"], api_env)
    assert bound.exit_code == 1
    assert "bound to operator(s) ship-risk [409 conflict]" in bound.stderr

    assert run(["delete", "operator", "ship-risk"], api_env).stdout == "operator/ship-risk deleted\n"
    assert run(["delete", "policies", "guard"], api_env).exit_code == 0
    assert run(["delete", "policies", "guard"], api_env).exit_code == 1
    empty = run(["get", "operators"], api_env)
    assert (empty.exit_code, empty.stdout, empty.stderr) == (0, "", "No operators found.\n")


def test_export_one_kind(repo: Path, api_env: Env) -> None:
    apply(api_env, "-f", str(repo))
    exported = run(["export", "--kind", "webhooks"], api_env).stdout
    assert exported.startswith("apiVersion: fibric.io/v1\nkind: Webhook\n")
    assert "kind: Operator" not in exported


def test_api_errors_become_messages_and_exit_codes(repo: Path, api_env: Env) -> None:
    no_key = run(["get", "operators"], {"FIBRIC_URL": api_env["FIBRIC_URL"]})
    assert no_key.exit_code == 2
    assert "no API key: set FIBRIC_KEY" in no_key.stderr

    bad_key = run(["get", "operators"], {**api_env, "FIBRIC_KEY": "sk_live_0000"})
    assert bad_key.exit_code == 1
    assert "[401 unauthenticated]" in bad_key.stderr
    assert "sk_live_0000" not in bad_key.output

    bad_set = run(["apply", "-f", str(repo), "--apply-set", "Not_A_Slug"], api_env)
    assert bad_set.exit_code == 2
    assert "apply_set" in bad_set.stderr

    down = run(["diff", "-f", str(repo)], {**api_env, "FIBRIC_URL": "http://127.0.0.1:9"})
    assert down.exit_code == 2  # diff: an error is 2, never mistaken for drift
    assert "cannot reach the Fibric API at http://127.0.0.1:9" in down.stderr
