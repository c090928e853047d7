"""LLM routes: which OpenAI-compatible endpoint a tenant's `model: <route>` reaches.

Routes are operator configuration (FIBRIC_LLM_ROUTES_FILE, read into
`settings.LlmSettings`), not tenant data: a tenant names a route in its spec
and may use it only if the route lists the tenant (or "*"). A route never holds
a key, only `api_key_env`, the environment variable that does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from fibric import settings as settings_module
from fibric.proposers import base

_ROUTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}")


class Route(BaseModel):
    """One named route, as written under `routes.<name>` in the routes file."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    base_url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$")] = Field(
        description="Up to and including the API version, e.g. https://api.openai.com/v1")
    model: str = Field(min_length=1, max_length=200, description="The provider's model name.")
    api_key_env: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = Field(
        default=None, description="Environment variable holding the key; omit for keyless local servers.")
    tenants: list[str] | Literal["*"] = Field(description="Tenant ids allowed to use the route, or '*'.")
    timeout_seconds: float = Field(default=60.0, gt=0, le=600, description="Per attempt.")
    max_retries: int = Field(default=2, ge=0, le=10, description="Retries after timeouts, 429 and 5xx.")
    retry_backoff_seconds: float = Field(
        default=1.0, ge=0, le=60, description="First retry's delay; doubles each retry.")
    temperature: float | None = Field(default=0.0, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    strict: bool = Field(default=True,
                         description="Ask for the answer schema strictly (json_schema and tools modes).")
    mode: Literal["json_schema", "json_object", "tools"] = Field(
        default="json_schema",
        description="How the answer's shape is asked for: response_format json_schema, response_format "
                    "json_object (the schema in the prompt), or one forced function call (tools).")
    api_key_header: Literal["authorization", "api-key"] = Field(
        default="authorization",
        description="Send the key as 'Authorization: Bearer <key>' or as 'api-key: <key>' (Azure OpenAI).")
    query: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")],
                Annotated[str, StringConstraints(max_length=200)]] = Field(
        default_factory=dict, description="Query parameters on every request, e.g. {api-version: ...}.")

    def allows(self, tenant_id: str) -> bool:
        return self.tenants == "*" or tenant_id in self.tenants


def parse(raw: Mapping[str, Any]) -> dict[str, Route]:
    """Every route validated; ProposalError naming `routes.<name>.<field>` on the first bad one."""
    routes: dict[str, Route] = {}
    for name, config in raw.items():
        if not isinstance(name, str) or name == "rules" or not _ROUTE_NAME.fullmatch(name):
            raise base.ProposalError(
                f"LLM routes: routes.{name}: a route name is 1-128 letters, digits, '_.:/-' and not 'rules'")
        try:
            routes[name] = Route.model_validate(config)
        except ValidationError as e:
            first = e.errors(include_url=False)[0]
            field = ".".join(str(p) for p in first["loc"])
            where = f"routes.{name}.{field}" if field else f"routes.{name}"
            message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
            raise base.ProposalError(f"LLM routes: {where}: {message}") from None
    return routes


def check(settings: settings_module.LlmSettings) -> None:
    """Validate the configured routes at start-up so a typo fails `fibric serve`, not the first run."""
    parse(settings.routes)


def resolve(name: str, tenant_id: str, settings: settings_module.LlmSettings) -> Route:
    """The route `name` if this tenant may use it; otherwise one message, whether it exists or not.

    Only the named route is validated, so one broken route does not stop the others.
    """
    route = parse({name: settings.routes[name]}).get(name) if name in settings.routes else None
    if route is None or not route.allows(tenant_id):
        raise base.ProposalError(
            f"model '{name}' is neither 'rules' nor an LLM route configured for this tenant")
    return route

