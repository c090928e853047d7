"""What `fibric` imports to start: a command's module only when it runs, and no server for a client.

Each command runs in a fresh Python that reports its sys.modules as it
exits, so the pin is the set of modules loaded, not a time (times are
measured by bench/bench_cli_start.py, against `python -c pass` in the same
run). Also here: the root group's table of commands says what the commands
themselves say, so `fibric --help` and completion, which read the table,
show what an eager listing would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import click
from cli_support import run

import fibric
from fibric import cli
from fibric.cli import root

# Run `fibric ARGS...`, then (exit or not) print every loaded module's name on stderr's last line.
CHILD = """
import json, sys
sys.argv[0] = "fibric"
from fibric import cli
try:
    cli.main()
finally:
    loaded = sorted(name for name, module in sys.modules.items() if module is not None)
    print("\\n" + json.dumps(loaded), file=sys.stderr)
"""
# Server and engine libraries: seconds of start-up that a client command never uses.
HEAVY = {"fastapi", "uvicorn", "starlette", "duckdb", "mcp", "regopy", "psycopg", "cel", "jsonschema",
         "watchfiles", "pydantic", "ruamel",
         # httpx's own command line, which fibric's entry point keeps out (root.main)
         "rich", "pygments"}
SERVER = {"fibric.api", "fibric.controller", "fibric.store", "fibric.policies", "fibric.connectors",
          "fibric.proposers", "fibric.system", "fibric.trust", "fibric.webhooks",
          # the spec models, with the CEL runtime: `apply`, `diff` and `-o yaml` need them, listing does not
          "fibric.specs"}
ROOT_ONLY = {"fibric", "fibric.cli", "fibric.cli.root", "fibric.cli.options", "fibric.errors"}


def started(args: Sequence[str], env: dict[str, str] | None = None
            ) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """`fibric ARGS` in a fresh process; its result and the modules it had loaded when it exited."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FIBRIC_", "_FIBRIC_"))}
    done = subprocess.run([sys.executable, "-c", CHILD, *args], env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=120)
    *_, last = done.stderr.rstrip("\n").rsplit("\n", 1)
    return done, set(json.loads(last))


def unwanted(modules: set[str]) -> list[str]:
    """The heavy libraries and server packages among `modules`, as the packages named above."""
    return sorted({name for name in modules
                   if name.split(".")[0] in HEAVY or ".".join(name.split(".")[:2]) in SERVER})


def test_version_imports_no_command() -> None:
    done, modules = started(["--version"])
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"fibric, version {fibric.__version__}\n"
    assert {m for m in modules if m.startswith("fibric")} <= ROOT_ONLY
    assert not {m for m in modules if m.split(".")[0] in HEAVY | {"httpx"}}


def test_help_lists_every_command_and_imports_none() -> None:
    done, modules = started(["--help"])
    assert done.returncode == 0, done.stderr
    listed = done.stdout.split("Commands:\n", 1)[1]
    assert [line.split()[0] for line in listed.splitlines()] == sorted(root.COMMANDS)
    assert {m for m in modules if m.startswith("fibric")} <= ROOT_ONLY
    assert not {m for m in modules if m.split(".")[0] in HEAVY | {"httpx"}}


def test_get_help_imports_the_client_not_the_server() -> None:
    done, modules = started(["get", "operators", "--help"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: fibric get [OPTIONS] KIND [NAME]")
    assert "fibric.cli.live" in modules
    assert unwanted(modules) == []


def test_get_lists_operators_without_the_server_stack(repo: Path, api_env: dict[str, str | None]) -> None:
    assert run(["apply", "-f", str(repo)], api_env).exit_code == 0
    env = {k: v for k, v in api_env.items() if v is not None}

    done, modules = started(["get", "operators"], env)

    assert done.returncode == 0, done.stderr
    assert "ship-risk" in done.stdout
    assert "fibric.client" in modules
    assert unwanted(modules) == []


def test_a_server_error_leaves_through_the_edge_without_the_server_stack(
        api_env: dict[str, str | None]) -> None:
    env = {k: v for k, v in api_env.items() if v is not None}

    done, modules = started(["get", "operators", "nope"], env)

    assert done.returncode == 1
    assert "Error: " in done.stderr and "nope" in done.stderr
    assert unwanted(modules) == []


def test_completing_a_command_name_imports_no_command() -> None:
    done, modules = started([], {"_FIBRIC_COMPLETE": "bash_complete", "COMP_WORDS": "fibric ",
                                 "COMP_CWORD": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [f"plain,{name}" for name in sorted(root.COMMANDS)]
    assert {m for m in modules if m.startswith("fibric")} <= ROOT_ONLY


def test_completing_a_kind_offers_the_kinds_without_the_server_stack() -> None:
    done, modules = started([], {"_FIBRIC_COMPLETE": "bash_complete", "COMP_WORDS": "fibric get ",
                                 "COMP_CWORD": "2"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [f"plain,{kind}" for kind in
                                   ("operators", "connectors", "policies", "webhooks", "plans")]
    assert unwanted(modules) == []


def test_each_entry_names_its_command_and_its_short_help() -> None:
    for name, entry in root.COMMANDS.items():
        command = cli.cli.commands[name]
        assert command.name == name
        assert entry.help == command.get_short_help_str(limit=sys.maxsize), name


def test_the_listing_from_the_table_is_the_listing_from_the_commands() -> None:
    eager = click.Group(commands={name: cli.cli.commands[name] for name in root.COMMANDS})
    lazy = click.Group(commands=root.Commands(root.COMMANDS).listed())
    ctx = click.Context(cli.cli, info_name="fibric")
    for width in (60, 80, 120):
        written = []
        for group in (eager, lazy):
            formatter = click.HelpFormatter(width=width)
            group.format_commands(ctx, formatter)
            written.append(formatter.getvalue())
        assert written[0] == written[1]
