"""Commands that never talk to a server: `validate` (what CI runs on every push) and `schema`."""

from __future__ import annotations

import json

import click

from fibric import specs
from fibric.cli import edge, local, options


@click.command("validate")
@options.files_option
def validate(paths: tuple[str, ...]) -> None:
    """Check spec files offline: YAML, fields, duplicates, references.

    Problems are printed as file:line:col: field: message and exit 2;
    warnings (e.g. a capability no connector in the files fulfils) go to
    stderr and do not fail.
    """
    loaded, report = local.load(paths)
    edge.warn(report.warnings)
    files = len({item.source.file for item in loaded})
    click.echo(f"{_count(len(loaded), 'document')} in {_count(files, 'file')}: valid")


@click.command("schema")
def schema() -> None:
    """Print the JSON Schema of a spec document (for yaml-language-server and linters)."""
    click.echo(json.dumps(specs.json_schema(), indent=2))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"
