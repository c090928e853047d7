"""Commands over the live state: `get`, `delete` and `export`."""

from __future__ import annotations

import json
from typing import Any

import click

from fibric import client, errors
from fibric.cli import edge, livestate, options, plans_command, tables

PLURAL = {"Operator": "operators", "Connector": "connectors", "Policy": "policies", "Webhook": "webhooks"}


@click.command("get")
@click.argument("kind", type=options.GET_KIND)
@click.argument("name", required=False)
@click.option("-o", "--output", type=click.Choice(["table", "yaml", "json"]), default="table",
              show_default=True, help="table; yaml: spec documents; json: API objects.")
@click.pass_context
def get(ctx: click.Context, kind: str, name: str | None, output: str) -> None:
    """List objects of KIND (operators, connectors, policies, webhooks, plans), or show NAME.

    `get plans` is `fibric plans list` (`get plans PLAN_ID`: `fibric plans show`).
    """
    api = options.session(ctx).client()
    if kind == options.PLANS:
        if output == "yaml":
            raise edge.BadInput("plans are not spec documents: use -o table or -o json")
        if name:
            plans_command.echo_plan(api, name, output)
        else:
            plans_command.echo_list(api, output)
        return
    if output == "json":
        data: Any = api.get_object(kind, name) if name else api.list_objects(kind)
        click.echo(json.dumps(data, indent=2))
        return
    items = _specs(api, kind, name)
    if output == "yaml":
        click.echo(livestate.to_yaml([livestate.of_live(i) for i in items]), nl=False)
    elif items:
        click.echo(tables.render(tables.rows(kind, items)))
    else:
        click.echo(f"No {PLURAL[kind]} found.", err=True)


@click.command("delete")
@click.argument("kind", type=options.KIND)
@click.argument("name")
@click.pass_context
def delete(ctx: click.Context, kind: str, name: str) -> None:
    """Delete the object NAME (or id) of KIND."""
    options.session(ctx).client().delete(kind, name)
    click.echo(f"{kind.lower()}/{name} deleted")


@click.command("export")
@click.option("--kind", type=options.KIND, default=None, help="Only this kind.")
@click.pass_context
def export(ctx: click.Context, kind: str | None) -> None:
    """Print the live desired state as multi-document YAML.

    No ids, status or fibric.io/ labels: the output re-applies with no change.
    """
    items = options.session(ctx).client().specs(kind)
    click.echo(livestate.to_yaml(livestate.ordered([livestate.of_live(i) for i in items])), nl=False)


def _specs(api: client.Client, kind: str, name: str | None) -> list[dict[str, Any]]:
    """Spec documents of `kind`, or the one named (or with id) `name`; NotFound like the API."""
    if name is None:
        return api.specs(kind)
    wanted = api.get_object(kind, name)["id"]  # the server's 404 for an unknown name or id
    found = [item for item in api.specs(kind) if item.get("id") == wanted]
    if not found:  # deleted between the two reads
        raise errors.NotFound(f"No such {kind.lower()}: '{name}'")
    return found
