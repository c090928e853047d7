"""`fibric policy test|eval`: Rego unit tests and one-off decisions, offline.

Both are thin adapters over `fibric.policies` (files.py there does the
reading and compiling); bad files come back as SpecInvalid, which the root
group turns into exit code 2. A failing unit test is exit code 1, like
`opa test`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import click

from fibric import policies
from fibric.cli import edge


@click.group("policy")
def policy() -> None:
    """Run Rego unit tests and evaluate policies locally, without a server."""


@policy.command("test")
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=False, dir_okay=True, file_okay=True))
def test(paths: tuple[str, ...]) -> None:
    """Run the Rego unit tests (`test_*` rules) in PATHS, like `opa test`.

    PATHS are .rego files, folders (searched for *.rego) and spec files
    (each Policy's `tests`). Prints one line per test and a summary; exits 1
    if any test fails, 2 if a file cannot be read or does not compile.
    """
    report = policies.run_path_tests(paths)
    echo_report(report.lines())
    if not report.passed:
        raise edge.Failure(f"{len(report.failures)} of {len(report.results)} policy tests failed")


@policy.command("eval")
@click.option("-f", "--file", "policy_file", required=True,
              type=click.Path(exists=False, dir_okay=False), help="The Rego policy, POLICY.rego.")
@click.option("--input", "input_file", required=True,
              type=click.Path(exists=False, dir_okay=False),
              help="The whole input document as JSON (docs/policies.md#the-input-document).")
@click.option("--query", default=None,
              help="Query whose value is the decision [default: data.<package>.decision].")
def eval_(policy_file: str, input_file: str, query: str | None) -> None:
    """Evaluate POLICY.rego on INPUT.json with the embedded engine and print the decision as JSON.

    The decision is computed exactly as the executor would: any failure is a
    BLOCK whose `rule` starts with `fail-closed:`.
    """
    decision = policies.eval_file(policy_file, input_file, query=query)
    click.echo(json.dumps(decision.to_dict()))


def echo_report(lines: Iterable[str]) -> None:
    """Unit-test report lines on stdout (shared with `fibric validate`)."""
    for line in lines:
        click.echo(line)

