"""`fibric diff -o json` and `-o markdown` against a real API server over a real store (both backends).

A pipeline reads the JSON (what changes, which fields) and posts the
Markdown on a pull request; both keep the text diff's exit codes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from cli_support import run

Env = dict[str, str | None]


def drifted(repo: Path, api_env: Env) -> None:
    """Apply the repo, then change it: one update, one create, one prune pending."""
    applied = run(["apply", "-f", str(repo)], api_env)
    assert applied.exit_code == 0, applied.output
    operator = repo / "operator.yaml"
    operator.write_text(operator.read_text().replace("team: ops", "team: sre")
                        .replace("subscribes: [order.updated]", "subscribes: [order.created]"))
    audit = (repo / "webhook.yaml").read_text().replace("ops-channel", "audit")
    (repo / "webhook.yaml").unlink()
    (repo / "audit.yaml").write_text(audit)


def test_json_names_each_object_its_action_and_the_changed_fields(repo: Path, api_env: Env) -> None:
    drifted(repo, api_env)
    result = run(["diff", "-f", str(repo), "-o", "json"], api_env)
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    assert document["drift"] is True
    assert document["apply_set"] == "default"
    assert document["summary"] == {"create": 1, "update": 1, "delete": 1, "unchanged": 2}
    by_name = {(o["kind"], o["name"]): o for o in document["objects"]}
    assert by_name[("Operator", "ship-risk")] == {
        "kind": "Operator", "name": "ship-risk", "action": "update",
        "changed": ["spec.subscribes[0]", "labels.team"]}
    assert by_name[("Webhook", "audit")]["action"] == "create"
    assert by_name[("Webhook", "ops-channel")] == {
        "kind": "Webhook", "name": "ops-channel", "action": "delete", "changed": []}
    assert by_name[("Policy", "guard")]["action"] == "unchanged"
    assert by_name[("Connector", "magento")]["action"] == "unchanged"
    assert result.stderr == "drift: 1 to create, 1 to configure, 1 to prune\n"

    applied = run(["apply", "-f", str(repo), "--prune"], api_env)
    assert applied.exit_code == 0, applied.output
    clean = run(["diff", "-f", str(repo), "-o", "json"], api_env)
    assert clean.exit_code == 0, clean.output
    document = json.loads(clean.stdout)
    assert document["drift"] is False
    assert {o["action"] for o in document["objects"]} == {"unchanged"}
    assert document["summary"] == {"create": 0, "update": 0, "delete": 0, "unchanged": 4}


def test_markdown_is_a_table_of_changes_with_a_collapsed_diff_each(repo: Path, api_env: Env) -> None:
    drifted(repo, api_env)
    result = run(["diff", "-f", str(repo), "-o", "markdown"], api_env)
    assert result.exit_code == 1, result.output
    text = result.stdout
    assert text.startswith("### Fibric diff (apply set `default`)\n")
    assert "\n**1** to create, **1** to update, **1** to delete; 2 unchanged.\n" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows == [
        "| action | kind | name | changed fields |",
        "| create | Webhook | audit | (whole object) |",  # in file order: audit.yaml first
        "| update | Operator | ship-risk | `spec.subscribes[0]`, `labels.team` |",
        "| delete | Webhook | ops-channel | (whole object) |",
    ]
    section = r"<details><summary>(.+?)</summary>\n\n```diff\n(.*?)\n```\n\n</details>"
    sections = re.findall(section, text, re.S)
    assert [title for title, _ in sections] == ["create webhook/audit", "update operator/ship-risk",
                                                "delete webhook/ops-channel"]
    update = sections[1][1]
    assert update.startswith("--- live/operator/ship-risk\n+++ local/operator/ship-risk\n")
    assert "-    team: ops\n+    team: sre\n" in update
    assert sections[0][1].startswith("--- /dev/null\n+++ local/webhook/audit\n")
    assert sections[2][1].startswith("--- live/webhook/ops-channel\n+++ /dev/null\n")
    assert "magento" not in text and "guard" not in text.replace("policy: guard", "")


def test_markdown_says_no_drift_and_exits_0(repo: Path, api_env: Env) -> None:
    assert run(["apply", "-f", str(repo)], api_env).exit_code == 0
    result = run(["diff", "-f", str(repo), "-o", "markdown"], api_env)
    assert result.exit_code == 0, result.output
    assert result.stdout == ("### Fibric diff (apply set `default`)\n\n"
                             "No drift: the live state matches the specs (4 objects unchanged).\n")


def test_an_error_exits_2_with_nothing_on_stdout_in_every_output(repo: Path, api_env: Env) -> None:
    down = {**api_env, "FIBRIC_URL": "http://127.0.0.1:9"}
    for fmt in ("json", "markdown", "text"):
        result = run(["diff", "-f", str(repo), "-o", fmt], down)
        assert result.exit_code == 2, (fmt, result.output)
        assert result.stdout == ""
        assert "127.0.0.1:9" in result.stderr


def test_an_unknown_output_is_a_usage_error(repo: Path, api_env: Env) -> None:
    result = run(["diff", "-f", str(repo), "-o", "yaml"], api_env)
    assert result.exit_code == 2
    assert "'yaml' is not one of 'text', 'json', 'markdown'" in result.stderr


def test_the_documented_json_has_the_shape_diff_prints(repo: Path, api_env: Env) -> None:
    guide = (Path(__file__).resolve().parents[2] / "docs" / "gitops.md").read_text()
    [example] = re.findall(r"```json\n(.*?)\n```", guide, re.S)
    documented = json.loads(example)
    printed = json.loads(run(["diff", "-f", str(repo), "-o", "json"], api_env).stdout)
    assert list(documented) == list(printed)
    assert list(documented["summary"]) == list(printed["summary"])
    assert {tuple(o) for o in documented["objects"]} == {tuple(o) for o in printed["objects"]}


def test_a_spec_stored_before_a_field_was_added_shows_no_drift() -> None:
    """After a server upgrade, `diff` agrees with apply: the same files are no change."""
    from fibric import specs
    from fibric.cli import drift, livestate

    local = specs.load_text("apiVersion: fibric.io/v1\nkind: Operator\nmetadata: {name: ship-risk}\n"
                            "spec: {capabilities: [orders.hold], policy: guard}\n", "operator.yaml")
    mine = livestate.of_local(local[0])
    older = {k: v for k, v in mine["spec"].items() if k not in ("plan_ttl_seconds", "sensitive")}
    live = [{"kind": "Operator", "metadata": {"name": "ship-risk", "labels": {}}, "spec": older}]

    [change] = drift.compare([mine], live, "git")
    assert change.action is drift.Action.UNCHANGED

    live[0]["spec"] = {**older, "policy": "other"}
    [change] = drift.compare([mine], live, "git")
    assert (change.action, change.changed_paths()) == (drift.Action.UPDATE, ["spec.policy"])
