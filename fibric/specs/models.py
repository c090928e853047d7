"""The four kinds of desired state, as pydantic models of their YAML shape.

These shapes are the contract (DESIGN.md, docs/specs.md). Every model forbids
unknown fields, so a typo in Git is an error at validate time, not a silently
ignored setting in production.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from fibric.specs import expressions, pointers

API_VERSION = "fibric.io/v1"
RESERVED_LABEL_PREFIX = "fibric.io/"

Name = Annotated[
    str,
    StringConstraints(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
    Field(description="Slug: lowercase letters, digits and '-', 1-63 characters."),
]
Capability = Annotated[
    str,
    StringConstraints(max_length=128, pattern=r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*$"),
    Field(description="A capability by intent, e.g. orders.hold."),
]
EventPattern = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.*?\-\[\]]+$"),
    Field(description="Event type, '*' globs allowed, e.g. order.*"),
]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
SecretName = Annotated[
    str,
    StringConstraints(max_length=63, pattern=r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$"),
    Field(description="Name of a tenant secret (`fibric secret set NAME`); letters, digits, '_', '.', '-'."),
]


def _unset(value: object) -> bool:
    """Fields added after release stay out of stored specs while unset, so they never look changed."""
    return value is None

WEBHOOK_EVENTS = ("plan.proposed", "plan.executed", "action.disposed", "receipt.created", "plan.rejected",
                  "plan.expired", "run.failed")
WebhookEvent = Literal["plan.proposed", "plan.executed", "action.disposed", "receipt.created",
                       "plan.rejected", "plan.expired", "run.failed"]


class FieldError(ValueError):
    """A model-level check that knows which nested field is wrong.

    `path` is relative to the model that raised it; the loader appends it to
    pydantic's location so the error points at the field, not at the model.
    """

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        self.path = path
        self.message = message
        dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        super().__init__(f"{dotted}: {message}")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key in labels:
        if key.startswith(RESERVED_LABEL_PREFIX):
            raise ValueError(f"label '{key}': the '{RESERVED_LABEL_PREFIX}' prefix is reserved")
        if not re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_./]{0,61}[A-Za-z0-9])?", key):
            raise ValueError(f"label '{key}' is not a valid label key")
    return labels


class Metadata(Strict):
    name: Name
    labels: Annotated[dict[str, Annotated[str, StringConstraints(max_length=63)]],
                      AfterValidator(_check_labels)] = Field(default_factory=dict)


# --- Operator -----------------------------------------------------------------


def _finite(value: Any, path: str = "args") -> Any:
    """Reject NaN and infinities: they never equal themselves, so a re-apply would look like a change."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path}: {value} is not a finite number")
    if isinstance(value, dict):
        for key, item in value.items():
            _finite(item, f"{path}.{key}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            _finite(item, f"{path}[{n}]")
    return value


def _cel(source: str) -> str:
    """A `when` condition must compile (docs/operators.md#rules)."""
    try:
        expressions.compile_expression(source)
    except expressions.ExpressionError as e:
        raise ValueError(str(e)) from None
    return source


def _template(text: str | None) -> str | None:
    if text is not None:
        try:
            expressions.parse_template(text)
        except expressions.ExpressionError as e:
            raise ValueError(str(e)) from None
    return text


def _templates_in_args(args: dict[str, Any]) -> dict[str, Any]:
    problems = expressions.check_args(args)
    if problems:
        path, message = problems[0]
        raise FieldError(path, message)
    return args


class RuleAction(Strict):
    capability: Capability
    args: Annotated[dict[str, Any], AfterValidator(_finite), AfterValidator(_templates_in_args)] = Field(
        default_factory=dict, description="Tool arguments; '{{ cel }}' inside a string is evaluated."
    )
    entity_key: Annotated[str | None, AfterValidator(_template)] = Field(
        default=None, max_length=500, description="Template; defaults to the event's entity_key."
    )
    idempotency_key: Annotated[str | None, AfterValidator(_template)] = Field(
        default=None, max_length=500,
        description="Template; derived from operator, entity, capability and args if omitted.",
    )


class Rule(Strict):
    when: Annotated[str, AfterValidator(_cel)] = Field(
        min_length=1, max_length=4000,
        description="CEL condition over event, events, sensed, operator and now.",
    )
    actions: list[RuleAction] = Field(min_length=1)


class OperatorSpec(Strict):
    purpose: str | None = Field(
        default=None, max_length=4000,
        description="What the operator is for, in plain words; an LLM model reads it first.",
    )
    capabilities: list[Capability] = Field(min_length=1)
    policy: Name = Field(description="metadata.name of the Policy that disposes of actions.")
    model: str = Field(default="rules", min_length=1, max_length=128)
    schedule: str | None = Field(default=None, description="Cron expression (5 fields).")
    subscribes: list[EventPattern] = Field(default_factory=list)
    sense: list[Capability] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    lifecycle: Literal["active", "paused", "draft"] = Field(
        default="active", description="The API's `status`: only active operators run."
    )
    plan_ttl_seconds: int | None = Field(
        default=None, ge=60, le=90 * 24 * 3600,
        description="How long a plan it proposes waits for a decision before it expires (its actions "
                    "declined); default: the installation's FIBRIC_PLAN_TTL_SECONDS.",
    )
    sensitive: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
                                                     max_length=200)]] = Field(
        default_factory=list, max_length=100,
        description="Paths under each event's `data` (dot-separated, e.g. customer.email) that model "
                    "call records keep masked; the model itself still sees them.",
    )

    @field_validator("capabilities", "sense")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for item in value:
            if item in seen:
                raise ValueError(f"'{item}' is listed twice")
            seen.add(item)
        return value

    @field_validator("schedule")
    @classmethod
    def _cron_shape(cls, value: str | None) -> str | None:
        if value is None:
            return value
        fields = value.split()
        if len(fields) != 5:
            raise ValueError(f"cron expression must have 5 fields, got {len(fields)}")
        if not all(re.fullmatch(r"[0-9*/,\-A-Za-z?LW#]+", f) for f in fields):
            raise ValueError(f"'{value}' is not a cron expression")
        return value

    @model_validator(mode="after")
    def _rules_use_own_capabilities(self) -> OperatorSpec:
        for i, rule in enumerate(self.rules):
            for j, action in enumerate(rule.actions):
                if action.capability not in self.capabilities:
                    raise FieldError(
                        ("rules", i, "actions", j, "capability"),
                        f"'{action.capability}' is not in spec.capabilities",
                    )
        return self


# --- Connector ----------------------------------------------------------------


class StdioTransport(Strict):
    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[EnvName, str] = Field(default_factory=dict)
    cwd: str | None = None


class HttpTransport(Strict):
    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$")]
    headers: dict[str, str] = Field(default_factory=dict)
    bearer_token_ref: SecretName | None = Field(
        default=None, exclude_if=_unset,
        description="Tenant secret holding a bearer token, by name; never the token."
    )
    bearer_token_env: EnvName | None = Field(
        default=None,
        description="Server environment variable holding a bearer token (installation specs only).",
    )

    @model_validator(mode="after")
    def _one_token_source(self) -> HttpTransport:
        if self.bearer_token_ref is not None and self.bearer_token_env is not None:
            raise ValueError("set at most one of 'bearer_token_ref' or 'bearer_token_env'")
        return self


class Transport(Strict):
    catalog: Name | None = Field(
        default=None, exclude_if=_unset,
        description="An entry of the installation's connector catalog, by name."
    )
    stdio: StdioTransport | None = Field(default=None,
                                         description="A command to run (installation specs only).")
    http: HttpTransport | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Transport:
        if sum(part is not None for part in (self.catalog, self.stdio, self.http)) != 1:
            raise ValueError("set exactly one of 'catalog', 'stdio' or 'http'")
        return self


class ConnectorSpec(Strict):
    display_name: str | None = Field(default=None, max_length=200, description="The API's `name`.")
    kind: Literal["saas", "hardware", "operator"] = "saas"
    transport: Transport
    capabilities: dict[Capability, Annotated[str, StringConstraints(min_length=1)]] = Field(
        min_length=1, description="capability -> MCP tool name"
    )


# --- Policy -------------------------------------------------------------------


class RegoSource(Strict):
    """Where a policy's Rego comes from: inline or a file, and the query that reads its decision."""

    rego: str | None = Field(default=None, description="Inline Rego source.")
    rego_file: str | None = Field(
        default=None, description="Rego file, relative to the spec file; the CLI inlines it."
    )
    query: str | None = Field(
        default=None,
        pattern=r"^data(\.[A-Za-z_][A-Za-z0-9_]*)+$",
        description="Query whose value is the decision object; defaults to <package>.decision.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.rego is None) == (self.rego_file is None):
            raise ValueError("set exactly one of 'rego' or 'rego_file'")
        return self


class ShadowSpec(RegoSource):
    """A candidate policy evaluated beside the live one, recorded on receipts, never deciding."""


class PolicySpec(RegoSource):
    tests: list[str] = Field(
        default_factory=list, description="Rego unit-test files, relative to the spec file."
    )
    test_rego: list[str] = Field(
        default_factory=list, description="Inline Rego unit-test modules (what `tests` resolve to)."
    )
    mask: list[Annotated[str, StringConstraints(max_length=500)]] | None = Field(
        default=None, exclude_if=_unset, max_length=100,
        description="JSON pointers into the input document (e.g. /action/args/card_number) whose values "
                    "receipts' decision records keep as \"**masked**\"; the policy still sees them.",
    )
    shadow: ShadowSpec | None = Field(
        default=None, exclude_if=_unset,
        description="A candidate policy (rego or rego_file, optional query) evaluated beside this one on "
                    "every executor decision; its would-be decision is recorded on the receipt "
                    "(policy.shadow) and never changes the outcome.",
    )

    @field_validator("mask")
    @classmethod
    def _pointers(cls, value: list[str] | None) -> list[str] | None:
        for n, pointer in enumerate(value or ()):
            try:
                pointers.parse(pointer)
            except ValueError as e:
                raise FieldError((n,), str(e)) from None
        return value

    @property
    def resolved(self) -> bool:
        """True when every file reference has been inlined (what the server stores)."""
        shadow_inlined = self.shadow is None or self.shadow.rego_file is None
        return self.rego_file is None and not self.tests and shadow_inlined


# --- Webhook ------------------------------------------------------------------


class WebhookSpec(Strict):
    url: Annotated[str, StringConstraints(max_length=2048, pattern=r"^https?://[^\s]+$")]
    events: list[WebhookEvent] = Field(min_length=1)
    description: str | None = Field(default=None, max_length=500)
    secret_ref: SecretName | None = Field(
        default=None, exclude_if=_unset,
        description="Tenant secret to sign with, by name; else one is generated."
    )
    secret_env: EnvName | None = Field(
        default=None,
        description="Server environment variable holding the signing secret (installation specs only).",
    )
    enabled: bool = True

    @model_validator(mode="after")
    def _one_secret_source(self) -> WebhookSpec:
        if self.secret_ref is not None and self.secret_env is not None:
            raise ValueError("set at most one of 'secret_ref' or 'secret_env'")
        return self


# --- Documents ----------------------------------------------------------------


class Document(Strict):
    api_version: Literal["fibric.io/v1"] = Field(alias="apiVersion")
    metadata: Metadata

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)

    @property
    def name(self) -> str:
        return self.metadata.name

    def spec_dict(self) -> dict[str, Any]:
        """The spec as plain JSON-able data, defaults included, for storage and comparison."""
        return self.spec.model_dump(mode="json")  # type: ignore[attr-defined]


class Operator(Document):
    kind: Literal["Operator"]
    spec: OperatorSpec


class Connector(Document):
    kind: Literal["Connector"]
    spec: ConnectorSpec


class Policy(Document):
    kind: Literal["Policy"]
    spec: PolicySpec


class Webhook(Document):
    kind: Literal["Webhook"]
    spec: WebhookSpec


KINDS: dict[str, type[Document]] = {
    "Operator": Operator,
    "Connector": Connector,
    "Policy": Policy,
    "Webhook": Webhook,
}
SPEC_MODELS: dict[str, type[BaseModel]] = {
    "Operator": OperatorSpec,
    "Connector": ConnectorSpec,
    "Policy": PolicySpec,
    "Webhook": WebhookSpec,
}
# Names the CLI and API accept for each kind: `fibric get operators`, `/v1/policies`.
KIND_ALIASES: dict[str, str] = {}
for _kind in KINDS:
    for _alias in (_kind.lower(), _kind.lower() + "s", _kind):
        KIND_ALIASES[_alias] = _kind
KIND_ALIASES["policies"] = "Policy"


def kind_from_alias(alias: str) -> str:
    """'operators' / 'operator' / 'Operator' -> 'Operator'; ValueError names the choices."""
    try:
        return KIND_ALIASES[alias]
    except KeyError:
        raise ValueError(
            f"unknown kind '{alias}'; expected one of: operators, connectors, policies, webhooks"
        ) from None


def build(kind: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> Document:
    """A document from stored parts (validated, so stored state is always well-formed)."""
    return KINDS[kind].model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": kind,
            "metadata": {"name": name, "labels": labels or {}},
            "spec": spec,
        }
    )
