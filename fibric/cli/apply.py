"""`fibric apply`: validate locally, then create or update by name on the server, all or nothing."""

from __future__ import annotations

from typing import Any

import click

from fibric import client
from fibric.cli import edge, local, options


@click.command("apply")
@options.files_option
@click.option("--prune", is_flag=True, help="Delete objects of the apply set that are not in the files.")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@options.apply_set_option
@click.pass_context
def apply(ctx: click.Context, paths: tuple[str, ...], prune: bool, dry_run: bool, apply_set: str) -> None:
    """Create or update the objects in the spec files, all or nothing.

    Files are validated first; nothing is sent if they are invalid. Re-applying
    the same files changes nothing. A new webhook's signing secret is printed
    once: store it.
    """
    loaded, _ = local.load(paths, offline=False)
    api = options.session(ctx).client()
    try:
        result = api.apply(local.wire(loaded), apply_set=apply_set, prune=prune, dry_run=dry_run)
    except client.ApiError as e:
        if e.status == 400 and e.fields:
            raise edge.SpecFailure(local.locate(e.fields, loaded), "the server refused the specs; "
                                   "nothing was applied") from e
        raise
    suffix = " (dry run)" if result.get("dry_run") else ""
    for change in result.get("changes", []):
        click.echo(f"{change['kind'].lower()}/{change['name']} {change['action']}{suffix}")
        _show_secret(change)
    edge.warn(local.locate(result.get("warnings", []), loaded))


def _show_secret(change: dict[str, Any]) -> None:
    secret = change.get("signing_secret")
    if not secret:
        return
    click.echo(f"webhook/{change['name']} signing secret: {secret}")
    click.echo(
        f"warning: store the signing secret of webhook/{change['name']} now; it is not shown again",
        err=True,
    )

