"""What several commands share: the API session from FIBRIC_URL / FIBRIC_KEY, and kind names.

The client is built lazily, so offline commands (validate, schema, admin,
serve) never need a key, and a missing key is reported only by a command
that talks to the API. Its module (and httpx) is imported on first use too:
the root group imports this module, and `fibric --version` needs neither.
Kinds are resolved by the client's table, not fibric.specs, which loads the
spec models and the CEL runtime that `get` and `delete` never use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from fibric import client

DEFAULT_URL = "http://127.0.0.1:8080"


@dataclass
class Session:
    """The API a command talks to; the key is kept out of repr and messages."""

    url: str
    key: str | None = field(repr=False)
    timeout: float = 30.0
    _client: client.Client | None = field(default=None, repr=False)

    def client(self) -> client.Client:
        if self._client is None:
            from fibric import client
            from fibric.cli import edge

            if not self.key:
                raise edge.BadInput("no API key: set FIBRIC_KEY (or pass --key)")
            self._client = client.Client(self.url, self.key, timeout=self.timeout)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def session(ctx: click.Context) -> Session:
    found = ctx.find_object(Session)
    if found is None:  # a command invoked without the root group (library use)
        found = Session(DEFAULT_URL, None)
        ctx.obj = found
    return found


class KindParam(click.ParamType):
    """operators / operator / Operator -> 'Operator'."""

    name = "kind"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from fibric import client

        try:
            return client.kind_of(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "KIND"

    def words(self) -> list[str]:
        """The kinds as completion offers them."""
        from fibric import client

        return list(client.RESOURCES.values())

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str
                       ) -> list[CompletionItem]:
        from click.shell_completion import CompletionItem

        return [CompletionItem(word) for word in self.words() if word.startswith(incomplete)]


KIND = KindParam()

PLANS = "plans"  # `get` also reads plans: not desired state (no spec), listed as `fibric plans list` does


class GetKindParam(KindParam):
    """A KIND for `get`: the four spec kinds, or plans."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if str(value).lower() in ("plan", "plans"):
            return PLANS
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as e:
            self.fail(f"{e.message}, plans", param, ctx)

    def words(self) -> list[str]:
        return [*super().words(), PLANS]


GET_KIND = GetKindParam()

files_option = click.option(
    "-f", "--filename", "paths", multiple=True, required=True,
    type=click.Path(exists=False, dir_okay=True, file_okay=True),
    help="Spec file or folder (every *.yaml / *.yml under it); repeatable.",
)
apply_set_option = click.option(
    "--apply-set", default="default", show_default=True,
    help="Name of the set of objects these files own; --prune deletes set members missing from them.",
)
