"""`fibric apply`: validate locally, then create or update by name on the server, all or nothing.

A new webhook's signing secret comes back once, in the apply's answer. It is
never printed: apply runs in CI, whose logs many people read. With
`--secrets-out DIR` it is written to a file only its owner can read;
without, apply says how to get a new one (rotation shows the new secret once).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from fibric import client
from fibric.cli import edge, local, options


@click.command("apply")
@options.files_option
@click.option("--prune", is_flag=True, help="Delete objects of the apply set that are not in the files.")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@options.apply_set_option
@click.option("--secrets-out", "secrets_out", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="DIR", help="Write each new webhook's signing secret to DIR/webhook-NAME.secret "
              "(mode 0600; DIR is created 0700). Secrets are never printed.")
@click.pass_context
def apply(ctx: click.Context, paths: tuple[str, ...], prune: bool, dry_run: bool, apply_set: str,
          secrets_out: Path | None) -> None:
    """Create or update the objects in the spec files, all or nothing.

    Files are validated first; nothing is sent if they are invalid. Re-applying
    the same files changes nothing. A new webhook's signing secret is never
    printed: `--secrets-out DIR` writes it to a file only you can read;
    without it, rotate the secret to get one (docs/webhooks.md).
    """
    loaded, _ = local.load(paths, offline=False)
    if secrets_out is not None:  # made before anything changes: a new secret must have somewhere to go
        try:
            secrets_out.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise edge.BadInput(f"--secrets-out {secrets_out}: cannot create it: {e.strerror or e}") from e
    api = options.session(ctx).client()
    try:
        result = api.apply(local.wire(loaded), apply_set=apply_set, prune=prune, dry_run=dry_run)
    except client.ApiError as e:
        if e.status == 400 and e.fields:
            raise edge.SpecFailure(local.locate(e.fields, loaded), "the server refused the specs; "
                                   "nothing was applied") from e
        raise
    suffix = " (dry run)" if result.get("dry_run") else ""
    lost = []
    for change in result.get("changes", []):
        click.echo(f"{change['kind'].lower()}/{change['name']} {change['action']}{suffix}")
        if change.get("signing_secret") and not _keep_secret(change, secrets_out):
            lost.append(change["name"])
    edge.warn(local.locate(result.get("warnings", []), loaded))
    if lost:
        raise edge.Failure(f"the signing secret of webhook(s) {', '.join(lost)} could not be written; "
                           "rotate it to get a new one")


def _keep_secret(change: dict[str, Any], folder: Path | None) -> bool:
    """Put a new webhook's secret in its file, or say how to get one; never print it. False: not written."""
    name = change["name"]
    if folder is None:
        click.echo(
            f"webhook/{name}: a signing secret was created; it is not printed (output ends up in logs). "
            "To get one, rotate it (the new secret is shown once): "
            f"POST /v1/webhooks/{change['id']}/rotate_secret {{\"grace_period_seconds\": 0}}. "
            "Pass --secrets-out DIR to have apply write new webhooks' secrets to files.", err=True)
        return True
    try:
        path = write_secret(folder, f"webhook-{name}", change["signing_secret"])
    except OSError as e:
        click.echo(f"error: webhook/{name}: cannot write its signing secret in {folder}: {e.strerror}",
                   err=True)
        return False
    click.echo(f"webhook/{name} signing secret written to {path} (mode 0600)", err=True)
    return True


def write_secret(folder: Path, name: str, secret: str) -> Path:
    """Write `secret` to `folder`/NAME.secret, readable by its owner only (0600); the file's path."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # one that exists keeps its mode
    path = folder / f"{name}.secret"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        os.fchmod(fd, 0o600)  # a file that was already there gets no wider mode either, before the secret
        file.write(secret)
    return path

