"""Commands that never talk to a server: `validate` (what CI runs on every push) and `schema`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import click

from fibric import errors, policies, proposers, settings, specs, trust
from fibric.cli import edge, local, options, policy
from fibric.policies import references
from fibric.specs import loader


@click.command("validate")
@options.files_option
@click.option("--llm-routes", "llm_routes", type=click.Path(dir_okay=False), default=None,
              help="The server's LLM routes file (FIBRIC_LLM_ROUTES_FILE): operators' `model` must name one.")
@click.option("--installation", is_flag=True,
              help="Check as the installation's own specs (serve --specs), which may start processes, use "
                   "http:// and read server variables; by default as a tenant's, which `fibric apply` sends.")
def validate(paths: tuple[str, ...], llm_routes: str | None, installation: bool) -> None:
    """Check spec files offline: YAML, fields, duplicates, references, Rego and its unit tests.

    What `fibric apply` would refuse: references (one file's against the
    other files of its folder too), Rego (compile errors, a query naming no
    rule, reads of input fields that do not exist, names nothing defines, a
    decision of the wrong shape; the shadow candidate's too),
    URLs the server refuses, and with --llm-routes the operators' models
    (docs/specs.md#what-fibric-validate-checks). Problems are
    printed as file:line:col: field: message and exit 2; a failing Rego unit
    test prints the test report and exits 1; warnings (e.g. a capability no
    connector in the files fulfils) go to stderr and do not fail.
    """
    # References are checked below, against the files and their folders, not by load().
    loaded, _ = local.load(paths, offline=False)
    known = _neighbours(paths)
    report = specs.check_set(
        loaded,
        live_policies=[i.document.name for i in known if isinstance(i.document, specs.Policy)],
        live_capabilities=[c for i in known if isinstance(i.document, specs.Connector)
                           for c in i.document.spec.capabilities],
    )
    origin = trust.Origin.INSTALLATION if installation else trust.Origin.TENANT
    report.problems += trust.Boundary().admit(loaded, origin, {}, offline=True)
    if llm_routes is not None:
        report.problems += specs.check_models(loaded, [proposers.RULES, *_route_names(llm_routes)])
    edge.warn(report.warnings)
    # Unresolved documents, so Rego problems name the .rego file rather than the inlined copy.
    rules = [item for item in specs.load_paths(paths) if isinstance(item.document, specs.Policy)]
    for item in rules:
        for shadow, compile_one in ((False, policies.compile_spec), (True, policies.compile_shadow_spec)):
            try:
                compiled = compile_one(item)
            except errors.SpecInvalid as e:
                report.problems.extend(e.problems)
                continue
            if compiled is not None:
                report.problems.extend(references.check_spec(item, compiled, shadow=shadow))
    report.raise_for_problems()
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


def _neighbours(paths: Sequence[str]) -> list[specs.Loaded]:
    """The documents of the other spec files in the folder of each file named directly.

    A policy or connector an operator names often lives in a file beside it;
    validating the operator's file alone should find it there. A neighbour
    that does not load is not the one being validated, so it is skipped.
    """
    named = {Path(p).resolve() for p in loader.expand_paths(paths)}
    folders = {Path(p).parent for p in paths if Path(p).is_file()}
    found: list[specs.Loaded] = []
    for folder in sorted(folders):
        for file in sorted(folder.iterdir()):
            if file.suffix in loader.YAML_SUFFIXES and file.is_file() and file.resolve() not in named:
                try:
                    found.extend(specs.load_paths([file]))
                except errors.SpecInvalid:
                    continue
    return found


def _route_names(path: str) -> list[str]:
    """The route names of an LLM routes file, read and checked as `fibric serve` reads it."""
    try:
        config = settings.LlmSettings.from_env({"FIBRIC_LLM_ROUTES_FILE": path})
        proposers.check_routes(config)
    except (ValueError, proposers.ProposalError) as e:
        raise edge.BadInput(str(e)) from e
    return [str(name) for name in config.routes]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"
