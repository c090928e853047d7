"""MCP connectors: pooled sessions to real MCP servers, tool discovery, pins and calls.

The controller owns one `ConnectorRuntime`; docs/connectors.md describes
transports, capability mapping, status, pinning and the `_meta` keys.
"""

from fibric.connectors.connector import ConnectorSettings
from fibric.connectors.connector_errors import (
    CallFailed,
    CallTimeout,
    CapabilityUnavailable,
    InvalidToolResult,
    NotConnected,
    TenantBusy,
    ToolCallRejected,
)
from fibric.connectors.pinning import MemoryPinStore, PinStore
from fibric.connectors.runtime import ConnectorRuntime
from fibric.connectors.status import ConnectorState
from fibric.connectors.tools import (
    ENTITY_META_KEY,
    IDEMPOTENCY_META_KEY,
    Binding,
    ToolInfo,
    ToolResult,
    pin_hash,
)

__all__ = [
    "ENTITY_META_KEY",
    "IDEMPOTENCY_META_KEY",
    "Binding",
    "CallFailed",
    "CallTimeout",
    "CapabilityUnavailable",
    "ConnectorRuntime",
    "ConnectorSettings",
    "ConnectorState",
    "InvalidToolResult",
    "MemoryPinStore",
    "NotConnected",
    "PinStore",
    "TenantBusy",
    "ToolCallRejected",
    "ToolInfo",
    "ToolResult",
    "pin_hash",
]
