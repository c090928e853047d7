"""Commands that never talk to a server: `validate` (what CI runs on every push) and `schema`."""

from __future__ import annotations

import json

import click

from fibric import errors, policies, specs
from fibric.cli import edge, local, options, policy


@click.command("validate")
@options.files_option
def validate(paths: tuple[str, ...]) -> None:
    """Check spec files offline: YAML, fields, duplicates, references, Rego and its unit tests.

    Problems (including Rego that does not compile, at the .rego file's line)
    are printed as file:line:col: field: message and exit 2; a failing Rego
    unit test prints the test report and exits 1; warnings (e.g. a capability
    no connector in the files fulfils) go to stderr and do not fail.
    """
    loaded, report = local.load(paths)
    edge.warn(report.warnings)
    # Unresolved documents, so Rego problems name the .rego file rather than the inlined copy.
    rules = [item for item in specs.load_paths(paths) if isinstance(item.document, specs.Policy)]
    problems: list[errors.SpecProblem] = []
    for item in rules:
        try:
            policies.compile_spec(item)
        except errors.SpecInvalid as e:
            problems.extend(e.problems)
    if problems:
        raise errors.SpecInvalid(problems)
    tests = policies.run_spec_tests(rules)
    if tests.results:
        policy.echo_report(tests.lines())
    if not tests.passed:
        raise edge.Failure(f"{len(tests.failures)} of {len(tests.results)} policy tests failed")
    files = len({item.source.file for item in loaded})
    click.echo(f"{_count(len(loaded), 'document')} in {_count(files, 'file')}: valid")


@click.command("schema")
def schema() -> None:
    """Print the JSON Schema of a spec document (for yaml-language-server and linters)."""
    click.echo(json.dumps(specs.json_schema(), indent=2))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"
