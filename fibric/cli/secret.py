"""`fibric secret`: a tenant's secrets, which its specs name instead of server variables.

The value is read from standard input, never from an argument (it would land
in shell history and `ps`), sent once, and never printed: `list` shows names
and fingerprints only. A spec names a secret with `bearer_token_ref` (an HTTP
connector) or `secret_ref` (a webhook); see docs/security.md#secrets.
"""

from __future__ import annotations

import sys

import click

from fibric import errors
from fibric.cli import options


@click.group("secret")
def secret() -> None:
    """Set, list and delete the tenant's secrets (values are never shown)."""


@secret.command("set")
@click.argument("name")
@click.pass_context
def set_secret(ctx: click.Context, name: str) -> None:
    """Store secret NAME from standard input (one trailing newline is dropped).

    \b
    Example:  printf %s "$TOKEN" | fibric secret set orders-token
    """
    if sys.stdin.isatty():
        click.echo(f"Value of secret {name} (input hidden), then Enter:", err=True)
        value = click.prompt("", hide_input=True, prompt_suffix="", err=True)
    else:
        value = sys.stdin.read()
        value = value[:-1] if value.endswith("\n") else value
        value = value[:-1] if value.endswith("\r") else value
    if not value:
        raise errors.SpecInvalid(errors.SpecProblem("is empty: pipe the secret into the command",
                                                    path="value"))
    body = options.session(ctx).client().set_secret(name, value)
    click.echo(f"secret/{body['name']} set ({body['fingerprint']})")


@secret.command("list")
@click.pass_context
def list_secrets(ctx: click.Context) -> None:
    """List the tenant's secrets: name, fingerprint and when each was last set."""
    items = options.session(ctx).client().list_secrets()
    width = max([4, *(len(i["name"]) for i in items)])
    click.echo(f"{'NAME':<{width}}  {'FINGERPRINT':<29}  UPDATED")
    for item in items:
        click.echo(f"{item['name']:<{width}}  {item['fingerprint']:<29}  {item['updated_at']}")


@secret.command("delete")
@click.argument("name")
@click.pass_context
def delete_secret(ctx: click.Context, name: str) -> None:
    """Delete secret NAME (refused while a spec names it)."""
    options.session(ctx).client().delete_secret(name)
    click.echo(f"secret/{name} deleted")
