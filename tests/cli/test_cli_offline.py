"""Commands that need no server: validate, schema, and help for every command."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from cli_support import line_of, run

from fibric import cli, specs


def test_validate_accepts_a_good_repo(repo: Path) -> None:
    result = run(["validate", "-f", str(repo)])
    assert result.exit_code == 0, result.output
    assert "4 documents in 4 files: valid" in result.stdout
    assert result.stderr == ""


def test_validate_reports_each_problem_at_file_line_col_and_exits_2(repo: Path) -> None:
    operator = repo / "operator.yaml"
    operator.write_text(operator.read_text().replace("policy: guard", "policy: nope")
                        .replace("subscribes:", "subscribez:"))
    webhook = repo / "webhook.yaml"
    webhook.write_text(webhook.read_text().replace("[plan.proposed]", "[plan.proposed, plan.eaten]"))

    result = run(["validate", "-f", str(repo / "operator.yaml"), "-f", str(webhook)])

    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    subscribez = line_of(operator, "subscribez")
    assert f"{operator}:{subscribez}:3: spec.subscribez: unknown field; did you mean 'subscribes'?" in lines
    events = line_of(webhook, "events")
    assert any(line.startswith(f"{webhook}:{events}:") and "spec.events[1]" in line for line in lines)
    assert lines[-1] == "Error: 2 problems found"
    assert "Traceback" not in result.output


def test_validate_reports_dangling_references_offline(repo: Path) -> None:
    (repo / "policy.yaml").unlink()
    result = run(["validate", "-f", str(repo)])
    assert result.exit_code == 2
    line = line_of(repo / "operator.yaml", "policy: guard")
    assert f"{repo / 'operator.yaml'}:{line}:3: spec.policy: policy 'guard' does not exist" in result.stderr


def test_validate_prints_warnings_on_stderr_and_passes(repo: Path) -> None:
    (repo / "connector.yaml").unlink()
    result = run(["validate", "-f", str(repo)])
    assert result.exit_code == 0, result.output
    line = line_of(repo / "operator.yaml", "capabilities")
    assert (f"warning: {repo / 'operator.yaml'}:{line}:18: spec.capabilities[0]: "
            "no connector fulfils capability 'orders.hold'") in result.stderr.splitlines()
    assert "warning" not in result.stdout


def test_validate_reports_unreadable_rego_and_bad_yaml(repo: Path) -> None:
    (repo.parent / "policies" / "guard.rego").unlink()
    (repo / "webhook.yaml").write_text("apiVersion: fibric.io/v1\nkind: Webhook\nmetadata: [oops\n")
    result = run(["validate", "-f", str(repo)])
    assert result.exit_code == 2
    assert f"{repo / 'webhook.yaml'}:4:1: invalid YAML" in result.stderr
    line = line_of(repo / "policy.yaml", "rego_file")
    assert f"{repo / 'policy.yaml'}:{line}:3: spec.rego_file: cannot read" in result.stderr


def test_validate_of_a_missing_path_or_empty_folder_fails(tmp_path: Path) -> None:
    missing = run(["validate", "-f", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    assert f"no such file or folder: {tmp_path / 'nope'}" in missing.stderr
    empty = run(["validate", "-f", str(tmp_path)])
    assert empty.exit_code == 2
    assert "no spec documents found" in empty.stderr


def test_schema_is_the_json_schema_of_a_spec_document() -> None:
    result = run(["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema == json.loads(json.dumps(specs.json_schema()))
    assert schema["$schema"].startswith("https://json-schema.org/")
    kinds = json.dumps(schema)
    for kind in specs.KINDS:
        assert f'"{kind}"' in kinds


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found.extend(_commands(command, (*path, name)))
        else:
            found.append((*path, name))
    return found


ALL_COMMANDS = _commands(cli.cli)


def test_the_walk_finds_every_command() -> None:
    assert {c[0] for c in ALL_COMMANDS if c} == {
        "admin", "apply", "audit", "connector", "delete", "demo", "describe", "diff", "export", "get",
        "plans", "policy", "schema", "secret", "serve", "status", "validate"}
    assert {("plans", c) for c in ("list", "show", "approve", "reject")} <= set(ALL_COMMANDS)
    assert {("secret", "set"), ("secret", "list"), ("secret", "delete")} <= set(ALL_COMMANDS)
    assert ("admin", "key", "create") in ALL_COMMANDS
    assert ("admin", "tenant", "list") in ALL_COMMANDS
    assert ("policy", "test") in ALL_COMMANDS
    assert ("policy", "eval") in ALL_COMMANDS


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "fibric")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = run([*path, "--help"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Usage: fibric {' '.join(path)}".rstrip())
    command: click.Command = cli.cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    assert command.help and command.help.strip(), f"{path} has no help text"
