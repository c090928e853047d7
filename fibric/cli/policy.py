"""`fibric policy test|eval|replay`: Rego unit tests and one-off decisions offline; replay on a server.

`test` and `eval` are thin adapters over `fibric.policies` (policy_files.py there
does the reading and compiling); bad files come back as SpecInvalid, which
the root group turns into exit code 2. A failing unit test is exit code 1,
like `opa test`. `replay` asks the server (receipts live there) what a
candidate would have decided on recorded decisions; exit 1 when one would
loosen (by default), for CI.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import click

from fibric import policies
from fibric.cli import edge, options


@click.group("policy")
def policy() -> None:
    """Run Rego unit tests, evaluate policies locally, and replay recorded decisions against a candidate."""


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


@policy.command("replay")
@click.option("-f", "--file", "policy_file", required=True,
              type=click.Path(exists=False, dir_okay=False), help="The candidate policy, NEW.rego.")
@click.option("--policy", "policy_ref", default=None,
              help="The live policy whose decisions to replay (name or pol_ id) [default: the only one].")
@click.option("--query", default=None,
              help="The candidate's decision query [default: data.<package>.decision].")
@click.option("--since", default=None, help="Only decisions since: 7d, 24h, 30m or an RFC 3339 time.")
@click.option("--operator", default=None, help="Only this operator's decisions (name or op_ id).")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--fail-on", type=click.Choice(["loosen", "any", "none"]), default="loosen", show_default=True,
              help="Exit 1 when a decision would loosen (BLOCK->ALLOW/ALERT, ALERT->ALLOW), change at all "
                   "(decision or rule), or never.")
@click.pass_context
def replay(ctx: click.Context, policy_file: str, policy_ref: str | None, query: str | None,
           since: str | None, operator: str | None, output: str, fail_on: str) -> None:
    """Re-evaluate the recorded inputs of a live policy's receipts against NEW.rego, on the server.

    Prints what would change: decisions (recorded -> candidate), rule changes,
    counts by operator and capability, and the first changed receipts. Exits 1
    when a decision would loosen (see --fail-on), 2 on bad input.
    """
    try:
        with open(policy_file, encoding="utf-8") as f:
            rego = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise edge.BadInput(f"cannot read '{policy_file}': {getattr(e, 'strerror', None) or e}") from e
    api = options.session(ctx).client()
    if policy_ref is None:
        found = api.list_policies()
        if len(found) != 1:
            names = ", ".join(p["name"] for p in found) or "none"
            raise edge.BadInput(f"name the policy to replay with --policy (policies: {names})")
        policy_ref = str(found[0]["id"])
    report = api.replay_policy(policy_ref, rego, query=query, since=since, operator=operator)
    if output == "json":
        click.echo(json.dumps(report, indent=2))
    else:
        echo_report(replay_lines(report))
    if fail_on == "loosen" and report["loosened"]:
        raise edge.Failure(f"{report['loosened']} decisions would loosen")
    if fail_on == "any" and report["changed"]:
        raise edge.Failure(f"{report['changed']} decisions would change")


def replay_lines(report: dict[str, Any]) -> Iterable[str]:
    """The replay report for a terminal."""
    yield (f"replayed {report['replayed']} decisions of policy {report['policy_id']}"
           + (f" since {report['since']}" if report["since"] else "")
           + f" against candidate {report['candidate_sha256'][:12]}")
    if report["skipped"]:
        yield f"skipped: {report['skipped']} receipts had no decision record (older, or no policy ran)"
    if report["masked"]:
        yield f"masked: {report['masked']} receipts had masked fields (replayed as recorded)"
    yield "decisions (recorded -> candidate):"
    for t in report["transitions"]:
        mark = "  LOOSER" if t["loosens"] else ("  stricter" if t["from"] != t["to"] else "")
        yield f"  {t['from']:>5} -> {t['to']:<5} {t['count']:>8}{mark}"
    if report["rule_changes"]:
        yield "rule changes:"
        for key, n in report["rule_changes"].items():
            yield f"  {key.replace('->', ' -> ')}: {n}"
    for title, name in (("by operator:", "by_operator"), ("by capability:", "by_capability")):
        yield title
        for key, tally in report[name].items():
            yield (f"  {key}: {tally['replayed']} replayed, {tally['changed']} changed, "
                   f"{tally['loosened']} loosened")
    if report["changes"]:
        yield "changed receipts" + (" (the first ones)" if report["changes_truncated"] else "") + ":"
        for c in report["changes"]:
            yield (f"  {c['receipt_id']} {c['operator']} {c['capability']} {c['entity_key']}: "
                   f"{c['from']['decision']}/{c['from']['rule']} -> {c['to']['decision']}/{c['to']['rule']}"
                   + ("  LOOSER" if c["loosened"] else ""))
    yield f"{report['loosened']} would loosen; {report['changed']} would change"


def echo_report(lines: Iterable[str]) -> None:
    """Unit-test report lines on stdout (shared with `fibric validate`)."""
    for line in lines:
        click.echo(line)

