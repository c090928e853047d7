"""The installation's connector catalog: the only commands a tenant's connector may start.

A tenant never writes a command line. The installation lists, in one YAML
file it owns, the MCP servers it is willing to run (command, args, env and
working directory fixed) or reach (an HTTP URL, with a bearer token from a
server variable if it likes); a tenant's Connector names one entry with
`transport: {catalog: NAME}`. Each tenant's connector still gets its own
session (its own process for stdio entries).

```yaml
connectors:
  orders:
    description: The example order system
    stdio: {command: python, args: [examples/mcp/orders_server.py], env: {ORDERS_DB: orders.db}}
  tickets:
    http: {url: "http://tickets.internal:9000/mcp", bearer_token_env: TICKETS_TOKEN}
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from pydantic import Field, ValidationError, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from fibric import errors, specs
from fibric.specs import loader, models

SETTING = "trust.connector_catalog (FIBRIC_CONNECTOR_CATALOG, --connector-catalog)"


class Entry(models.Strict):
    """One MCP server the installation offers its tenants."""

    description: str | None = Field(default=None, max_length=500)
    stdio: models.StdioTransport | None = None
    http: models.HttpTransport | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Entry:
        if (self.stdio is None) == (self.http is None):
            raise ValueError("set exactly one of 'stdio' or 'http'")
        return self

    @property
    def transport(self) -> models.Transport:
        return models.Transport(stdio=self.stdio, http=self.http)


@dataclass(frozen=True)
class Catalog:
    entries: Mapping[str, Entry] = field(default_factory=lambda: MappingProxyType({}))
    source: Path | None = None

    @classmethod
    def load(cls, path: Path | None) -> Catalog:
        """The catalog file's entries; SpecInvalid naming file:line of every problem."""
        if path is None:
            return cls()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise errors.SpecInvalid(errors.SpecProblem(f"cannot read the connector catalog: {e}",
                                                        file=str(path))) from e
        return cls.parse(text, str(path), path)

    @classmethod
    def parse(cls, text: str, filename: str, path: Path | None = None) -> Catalog:
        try:
            document = YAML(typ="rt").load(text)
        except YAMLError as e:
            raise errors.SpecInvalid(errors.SpecProblem(f"invalid YAML: {e}", file=filename)) from e
        if document is None:
            return cls(source=path)
        source = specs.Source(file=filename, line=1, node=document if isinstance(document, CommentedMap)
                              else None)
        if not isinstance(document, CommentedMap) or set(document) != {"connectors"} or not isinstance(
                document["connectors"], CommentedMap):
            raise errors.SpecInvalid(source.problem(
                "expected one key, 'connectors', mapping entry names to a stdio or http transport"))
        found: dict[str, Entry] = {}
        problems: list[errors.SpecProblem] = []
        for name, raw in document["connectors"].items():
            where = ("connectors", name)
            if not isinstance(name, str) or not _is_name(name):
                problems.append(source.problem(f"entry name '{name}' must be a slug (a-z, 0-9, '-')", where))
                continue
            try:
                found[name] = Entry.model_validate(loader.to_plain(raw))
            except ValidationError as e:
                for problem in loader.problems_from_validation(e, None):
                    path_parts = [*where, *(p for p in problem.path.replace("[", ".").split(".") if p)]
                    problems.append(source.problem(problem.message, path_parts))
        if problems:
            raise errors.SpecInvalid(problems)
        return cls(entries=MappingProxyType(found), source=path)

    def get(self, name: str) -> Entry | None:
        return self.entries.get(name)

    def describe_missing(self, name: str) -> str:
        """Why `name` cannot be used, and what the installation offers instead."""
        offered = ", ".join(sorted(self.entries)) or "none"
        return (f"no entry '{name}' in the installation's connector catalog (entries: {offered}; "
                f"setting {SETTING})")


def _is_name(name: str) -> bool:
    try:
        models.Metadata(name=name)
    except ValidationError:
        return False
    return True
