"""`fibric connector`: actions on a live connector that are not desired state.

Acknowledging tool definitions is a person's decision, not a spec change:
after reviewing a connector whose tools changed since they were pinned
(`ToolsChanged` True), `fibric connector ack NAME` accepts the definitions
the server lists now, and the connector is no longer flagged.
"""

from __future__ import annotations

import click

from fibric.cli import options


@click.group("connector")
def connector() -> None:
    """Act on a live connector (see `fibric get connectors`)."""


@connector.command("ack")
@click.argument("name")
@click.pass_context
def ack(ctx: click.Context, name: str) -> None:
    """Accept connector NAME's current tool definitions as its pins, clearing ToolsChanged."""
    body = options.session(ctx).client().ack_connector(name)
    tools = ", ".join(t.get("name", "?") for t in body.get("tools", [])) or "no tools"
    click.echo(f"connector/{name} acknowledged ({tools}); status {body.get('status', 'unknown')}")
