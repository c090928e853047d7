"""`fibric diff`: drift between spec files and the live state, as a unified diff of YAML.

Exit codes as kubectl diff: 0 no drift, 1 drift, 2 any error, so a GitOps
pipeline can tell "needs an apply" from "broken".
"""

from __future__ import annotations

import difflib
from typing import Any

import click

from fibric import errors
from fibric.cli import edge, livestate, local, options


@click.command("diff")
@options.files_option
@options.apply_set_option
@click.pass_context
def diff(ctx: click.Context, paths: tuple[str, ...], apply_set: str) -> None:
    """Show how the live state differs from the spec files.

    Prints a unified diff per object that would be created, configured, or
    pruned (objects of the apply set missing from the files). Exit 0: no
    drift; 1: drift; 2: error.
    """
    try:
        loaded, _ = local.load(paths, offline=False)
        live = options.session(ctx).client().specs()
    except errors.FibricError as e:
        raise edge.failure(e, always_bad_input=True) from e

    live_by_key = {livestate.key(item): livestate.of_live(item) for item in live}
    counts = {"create": 0, "configure": 0, "prune": 0}
    wanted = set()
    for loaded_item in loaded:
        mine = livestate.of_local(loaded_item)
        name = (mine["kind"], mine["name"])
        wanted.add(name)
        theirs = live_by_key.get(name)
        if theirs is None:
            counts["create"] += 1
            _emit(_label(name), None, mine)
        elif theirs != mine:
            counts["configure"] += 1
            _emit(_label(name), theirs, mine)
    for item in live:
        name = livestate.key(item)
        labels = item["metadata"].get("labels") or {}
        if name not in wanted and labels.get(livestate.APPLY_SET_LABEL) == apply_set:
            counts["prune"] += 1
            _emit(_label(name), live_by_key[name], None)

    if any(counts.values()):
        summary = ", ".join(f"{n} to {what}" for what, n in counts.items() if n)
        click.echo(f"drift: {summary}", err=True)
        ctx.exit(1)


def _emit(label: str, live: dict[str, Any] | None, local_item: dict[str, Any] | None) -> None:
    before = livestate.to_yaml([live]).splitlines(keepends=True) if live else []
    after = livestate.to_yaml([local_item]).splitlines(keepends=True) if local_item else []
    lines = difflib.unified_diff(
        before, after,
        fromfile=f"live/{label}" if live else "/dev/null",
        tofile=f"local/{label}" if local_item else "/dev/null",
    )
    click.echo("".join(lines), nl=False)


def _label(name: tuple[str, str]) -> str:
    return f"{name[0].lower()}/{name[1]}"
