"""`fibric diff`: drift between spec files and the live state, for people and for pipelines.

Three outputs of one comparison (fibric/cli/drift.py): `text` (the default)
is a unified diff of YAML per object; `json` is one document a pipeline
reads (per object kind, name, action and the changed field paths); and
`markdown` is a summary to post as a pull-request comment (a table, then
each object's diff in a collapsed section).

Exit codes as kubectl diff, whatever the output: 0 no drift, 1 drift, 2 any
error, so a GitOps pipeline can tell "needs an apply" from "broken".
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

import click

from fibric import errors
from fibric.cli import drift, edge, livestate, local, options

# The text output's summary words, as kubectl and `fibric apply` print them.
TEXT_VERBS = {drift.Action.CREATE: "create", drift.Action.UPDATE: "configure", drift.Action.DELETE: "prune"}
MARKDOWN_TITLE = "Fibric diff"


@click.command("diff")
@options.files_option
@options.apply_set_option
@click.option("-o", "--output", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text",
              show_default=True, help="text: unified diffs; json: one document for scripts; "
                                      "markdown: a summary for a pull-request comment.")
@click.pass_context
def diff(ctx: click.Context, paths: tuple[str, ...], apply_set: str, fmt: str) -> None:
    """Show how the live state differs from the spec files.

    For each object that would be created, configured, or pruned (objects of
    the apply set missing from the files): a unified diff (-o text), its
    action and changed field paths (-o json), or a PR-comment summary
    (-o markdown). Exit 0: no drift; 1: drift; 2: error (in every output).
    """
    try:
        loaded, _ = local.load(paths, offline=False)
        live = options.session(ctx).client().specs()
    except errors.FibricError as e:
        raise edge.failure(e, always_bad_input=True) from e

    changes = drift.compare([livestate.of_local(item) for item in loaded], live, apply_set)
    counted = drift.counts(changes)
    if fmt == "json":
        click.echo(json.dumps(as_document(changes, apply_set), indent=2))
    elif fmt == "markdown":
        click.echo(as_markdown(changes, apply_set), nl=False)
    else:
        for change in changes:
            if change.action is not drift.Action.UNCHANGED:
                click.echo(unified(change), nl=False)

    drifted = {action: n for action, n in counted.items() if n and action is not drift.Action.UNCHANGED}
    if drifted:
        summary = ", ".join(f"{n} to {TEXT_VERBS[action]}" for action, n in drifted.items())
        click.echo(f"drift: {summary}", err=True)
        ctx.exit(edge.FAILED)


def as_document(changes: list[drift.Change], apply_set: str) -> dict[str, Any]:
    """The -o json document: `drift`, counts by action, and every object compared, in file order."""
    return {
        "drift": any(c.action is not drift.Action.UNCHANGED for c in changes),
        "apply_set": apply_set,
        "summary": {action.value: n for action, n in drift.counts(changes).items()},
        "objects": [{"kind": c.kind, "name": c.name, "action": c.action.value, "changed": c.changed_paths()}
                    for c in changes],
    }


def as_markdown(changes: list[drift.Change], apply_set: str) -> str:
    """The -o markdown summary: a counts line, a table of the objects that change, a diff of each."""
    counted = drift.counts(changes)
    changing = [c for c in changes if c.action is not drift.Action.UNCHANGED]
    lines = [f"### {MARKDOWN_TITLE} (apply set `{apply_set}`)", ""]
    if not changing:
        lines.append(f"No drift: the live state matches the specs ({counted[drift.Action.UNCHANGED]} "
                     f"objects unchanged).")
        return "\n".join(lines) + "\n"
    unchanged = counted.pop(drift.Action.UNCHANGED)
    lines.append(", ".join(f"**{n}** to {action.value}" for action, n in counted.items() if n)
                 + f"; {unchanged} unchanged.")
    lines += ["", "| action | kind | name | changed fields |", "|---|---|---|---|"]
    for change in changing:
        fields = ", ".join(f"`{path}`" for path in change.changed_paths()) or "(whole object)"
        lines.append(f"| {change.action.value} | {change.kind} | {_cell(change.name)} | {_cell(fields)} |")
    for change in changing:
        body = unified(change)
        fence = "`" * max(3, _longest_backtick_run(body) + 1)
        lines += ["", f"<details><summary>{change.action.value} {_cell(change.label)}</summary>", "",
                  f"{fence}diff", body.rstrip("\n"), fence, "", "</details>"]
    return "\n".join(lines) + "\n"


def unified(change: drift.Change) -> str:
    """One object's unified diff of YAML, live (or /dev/null) to local (or /dev/null)."""
    before = livestate.to_yaml([change.live]).splitlines(keepends=True) if change.live else []
    after = livestate.to_yaml([change.local]).splitlines(keepends=True) if change.local else []
    lines = difflib.unified_diff(
        before, after,
        fromfile=f"live/{change.label}" if change.live else "/dev/null",
        tofile=f"local/{change.label}" if change.local else "/dev/null",
    )
    return "".join(lines)


def _cell(text: str) -> str:
    """Text safe in a Markdown table cell or summary: no column breaks, no HTML."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)
