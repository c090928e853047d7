"""The `fibric` command group: global options, command registration, and the error edge.

Every command is a thin adapter over the client (API commands) or the core
(validate, admin, serve). Errors from the core and the client pass through
`FibricGroup.invoke`, the one place they become messages and exit codes.
"""

from __future__ import annotations

import click

import fibric
from fibric import errors
from fibric.cli import (
    admin,
    apply,
    audit,
    connector,
    demo,
    diff,
    edge,
    live,
    offline,
    options,
    plans,
    policy,
    secret,
    serve,
)


class FibricGroup(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except errors.FibricError as e:
            raise edge.failure(e) from e


@click.group("fibric", cls=FibricGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="FIBRIC_URL", default=options.DEFAULT_URL, show_default=True,
              help="Base URL of the Fibric API [env FIBRIC_URL].")
@click.option("--key", envvar="FIBRIC_KEY", default=None,
              help="API key, sk_live_... [env FIBRIC_KEY; prefer the variable, it stays out of "
                   "shell history].")
@click.option("--timeout", envvar="FIBRIC_TIMEOUT", type=click.FloatRange(min=0.1), default=30.0,
              show_default=True, help="Seconds to wait for each API response [env FIBRIC_TIMEOUT].")
@click.version_option(fibric.__version__, prog_name="fibric")
@click.pass_context
def cli(ctx: click.Context, url: str, key: str | None, timeout: float) -> None:
    """Fibric: declarative control plane for governed AI operators.

    Specs live in Git; `fibric apply` makes the server match them. API
    commands are configured like kubectl, by FIBRIC_URL and FIBRIC_KEY.
    """
    session = options.Session(url=url, key=key, timeout=timeout)
    ctx.obj = session
    ctx.call_on_close(session.close)


for _command in (
    offline.validate, apply.apply, diff.diff, live.get, live.delete, live.export, offline.schema,
    admin.admin, serve.serve, policy.policy,
    connector.connector,
    plans.plans,
    secret.secret,
    audit.audit,
    demo.demo,
):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="fibric")
