"""Tools as Fibric sees them: definition, pin, side effect, and what a call returns.

These are plain values made from the MCP SDK's models at the boundary, so the
rest of Fibric (status, policy input, receipts) never depends on SDK types.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from mcp import types as mcp_types

from fibric import ids

# The `_meta` keys Fibric puts on every tools/call request (docs/connectors.md).
IDEMPOTENCY_META_KEY = "fibric.io/idempotency_key"
ENTITY_META_KEY = "fibric.io/entity_key"


def pin_hash(name: str, description: str | None, input_schema: Any) -> str:
    """sha256 of the canonical JSON of what a model reads about a tool.

    Canonical (sorted keys, no whitespace) so that a server re-serialising the
    same schema in another key order does not look like a changed tool.
    """
    canonical = json.dumps(
        {"name": name, "description": description, "inputSchema": input_schema},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ToolInfo:
    """One tool a server lists, reduced to what policy, status and pinning need."""

    name: str
    description: str | None
    input_schema: dict[str, Any]
    annotations: dict[str, Any] = field(default_factory=dict)  # wire names: readOnlyHint, ...

    @classmethod
    def from_mcp(cls, tool: mcp_types.Tool) -> ToolInfo:
        annotations = (
            tool.annotations.model_dump(by_alias=True, exclude_none=True, mode="json")
            if tool.annotations is not None
            else {}
        )
        return cls(tool.name, tool.description, dict(tool.input_schema), annotations)

    @property
    def side_effect(self) -> bool:
        """MCP's default: a tool without readOnlyHint: true may change the world."""
        return self.annotations.get("readOnlyHint") is not True

    @property
    def idempotent(self) -> bool:
        """Safe to retry after a crash (DESIGN.md, executor): read-only or idempotentHint: true."""
        return not self.side_effect or self.annotations.get("idempotentHint") is True

    @property
    def pin(self) -> str:
        return pin_hash(self.name, self.description, self.input_schema)

    def summary(self) -> dict[str, Any]:
        """The reference's `tools` entry."""
        return {"name": self.name, "side_effect": self.side_effect}


@dataclass(frozen=True)
class Binding:
    """A capability resolved to one connector's tool: what the policy input needs."""

    tenant_id: str
    connector: str
    capability: str
    tool: ToolInfo
    tool_changed: bool  # a tool of this connector differs from its pin and is not acknowledged

    def policy_input(self) -> dict[str, Any]:
        """The `connector` part of a policy input document."""
        return {
            "id": ids.object_id("Connector", self.connector),
            "name": self.connector,
            "tool": self.tool.name,
            "side_effect": self.tool.side_effect,
            "idempotent": self.tool.idempotent,
            "annotations": dict(self.tool.annotations),
            "tool_changed": self.tool_changed,
        }


@dataclass(frozen=True)
class ToolResult:
    """A tools/call result, intact: content blocks, structured content and isError as sent."""

    connector: str
    tool: str
    content: list[dict[str, Any]]
    structured_content: Any
    is_error: bool
    meta: dict[str, Any] | None = None

    @classmethod
    def from_mcp(cls, connector: str, tool: str, result: mcp_types.CallToolResult) -> ToolResult:
        return cls(
            connector=connector,
            tool=tool,
            content=[
                block.model_dump(by_alias=True, exclude_none=True, mode="json") for block in result.content
            ],
            structured_content=result.structured_content,
            is_error=result.is_error,
            meta=dict(result.meta) if result.meta else None,
        )

    def to_mcp(self) -> dict[str, Any]:
        """The result in MCP's wire shape, for receipts and the API."""
        data: dict[str, Any] = {"content": self.content, "isError": self.is_error}
        if self.structured_content is not None:
            data["structuredContent"] = self.structured_content
        if self.meta:
            data["_meta"] = self.meta
        return data
