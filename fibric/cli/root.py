"""The `fibric` command group: global options, the command table, and the error edge.

Every command is a thin adapter over the client (API commands) or the core
(validate, admin, serve). Errors from the core and the client pass through
`FibricGroup.invoke`, the one place they become messages and exit codes.

A command's module is imported only when that command runs. The server
commands pull in FastAPI, DuckDB, the policy engine and the rest of the
server (two seconds and more), which `fibric get` and `fibric --version`
never use. `COMMANDS` names each command's module and its one-line help, so
`fibric --help` and shell completion list every command without importing
any; tests/cli/test_cli_imports.py keeps the table true to the commands and
pins what a client command imports.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, NamedTuple

import click

import fibric
from fibric import errors
from fibric.cli import options

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem


class Entry(NamedTuple):
    """Where a top-level command lives, and the short help `fibric --help` shows for it."""

    module: str
    attribute: str
    help: str


COMMANDS: Mapping[str, Entry] = {
    "admin": Entry("fibric.cli.admin", "admin",
        "Administer tenants and API keys on the local state store."),
    "apply": Entry("fibric.cli.apply_command", "apply",
        "Create or update the objects in the spec files, all or nothing."),
    "audit": Entry("fibric.cli.audit_command", "audit",
        "Verify, checkpoint, query and export the receipt ledger (works while the server runs)."),
    "connector": Entry("fibric.cli.connector_command", "connector",
        "Act on a live connector (see `fibric get connectors`)."),
    "delete": Entry("fibric.cli.live", "delete",
        "Delete the object NAME (or id) of KIND."),
    "demo": Entry("fibric.cli.demo", "demo",
        "Run the loop end to end: event -> proposed plan -> approval -> receipts -> verified chain."),
    "describe": Entry("fibric.cli.status_command", "describe",
        "Show one object: its spec, conditions, its apply set's last error, and an operator's recent runs."),
    "diff": Entry("fibric.cli.diff", "diff",
        "Show how the live state differs from the spec files."),
    "export": Entry("fibric.cli.live", "export",
        "Print the live desired state as multi-document YAML."),
    "get": Entry("fibric.cli.live", "get",
        "List objects of KIND (operators, connectors, policies, webhooks, plans), or show NAME."),
    "plans": Entry("fibric.cli.plans_command", "plans",
        "List, show, approve and reject the execution plans operators propose."),
    "policy": Entry("fibric.cli.policy", "policy",
        "Run Rego unit tests, evaluate policies locally, and replay recorded decisions against a candidate."),
    "schema": Entry("fibric.cli.offline", "schema",
        "Print the JSON Schema of a spec document (for yaml-language-server and linters)."),
    "secret": Entry("fibric.cli.secret", "secret",
        "Set, list and delete the tenant's secrets (values are never shown)."),
    "serve": Entry("fibric.cli.serve", "serve",
        "Run the API server and the controller."),
    "status": Entry("fibric.cli.status_command", "status",
        "Show each apply set's sync status: revision, applied at, result, last error and drift."),
    "validate": Entry("fibric.cli.offline", "validate",
        "Check spec files offline: YAML, fields, duplicates, references, Rego and its unit tests."),
}


class Commands(MutableMapping[str, click.Command]):
    """A group's commands by name, each imported from its `Entry` the first time it is looked up.

    Iterating yields names only, so click's listing and its "did you mean"
    suggestions import nothing; `click.Group.get_command` is a lookup, so it
    imports the one command asked for.
    """

    def __init__(self, entries: Mapping[str, Entry]) -> None:
        self._entries = dict(entries)
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            entry = self._entries[name]  # KeyError: no such command, as a dict says it
            self._loaded[name] = getattr(importlib.import_module(entry.module), entry.attribute)
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self._entries and name not in self._loaded:
            raise KeyError(name)
        self._entries.pop(name, None)
        self._loaded.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(self._entries), **dict.fromkeys(self._loaded)})

    def __len__(self) -> int:
        return len(self._entries.keys() | self._loaded.keys())

    def listed(self) -> dict[str, click.Command]:
        """Every command as its help listing needs it: imported ones as they are, the rest as stand-ins."""
        return {name: self._loaded[name] if name in self._loaded
                else click.Command(name, help=self._entries[name].help) for name in self}


class FibricGroup(click.Group):
    """The root group: commands from `COMMANDS`, and our errors as messages and exit codes."""

    def __init__(self, **kwargs: Any) -> None:
        self.table = Commands(COMMANDS)
        super().__init__(commands=self.table, **kwargs)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except errors.FibricError as e:
            from fibric.cli import edge  # brings the client and httpx, which --version and --help skip

            raise edge.failure(e) from e

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's listing would import every command to read its help.
        click.Group(commands=self.table.listed()).format_commands(ctx, formatter)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        from click.shell_completion import CompletionItem  # loaded only when completing

        found = [CompletionItem(name, help=command.get_short_help_str())
                 for name, command in self.table.listed().items()
                 if name.startswith(incomplete) and not command.hidden]
        return found + click.Command.shell_complete(self, ctx, incomplete)


@click.group("fibric", cls=FibricGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="FIBRIC_URL", default=options.DEFAULT_URL, show_default=True,
              help="Base URL of the Fibric API [env FIBRIC_URL].")
@click.option("--key", envvar="FIBRIC_KEY", default=None,
              help="API key, sk_live_... [env FIBRIC_KEY; prefer the variable, it stays out of "
                   "shell history].")
@click.option("--timeout", envvar="FIBRIC_TIMEOUT", type=click.FloatRange(min=0.1), default=30.0,
              show_default=True, help="Seconds to wait for each API response [env FIBRIC_TIMEOUT].")
@click.version_option(fibric.__version__, prog_name="fibric")
@click.pass_context
def cli(ctx: click.Context, url: str, key: str | None, timeout: float) -> None:
    """Fibric: declarative control plane for governed AI operators.

    Specs live in Git; `fibric apply` makes the server match them. API
    commands are configured like kubectl, by FIBRIC_URL and FIBRIC_KEY.
    """
    session = options.Session(url=url, key=key, timeout=timeout)
    ctx.obj = session
    ctx.call_on_close(session.close)


def main() -> None:
    """Console-script entry point."""
    # httpx 0.28 imports its own command line (rich and pygments, a third of `import httpx`)
    # whenever they are installed, and common-expression-language installs rich. This process
    # never runs httpx's command line: a None entry fails that import and httpx puts a stub in
    # its place (upstream now imports it lazily: pydantic/httpx2#947).
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    cli(prog_name="fibric")
