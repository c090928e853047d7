"""A connector's observed state, and the status document the controller stores for it.

`ConnectorState` is an immutable snapshot, so the controller can read it
from any task and write it with `state.set_status` without racing the
supervisor. `status()` renders the project's status convention: conditions
(Kubernetes-style, with `last_transition_time` kept from the previous
status while a condition's status holds), plus the connector fields the API
shows: connection, tools, last_synced_at, last_error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from fibric import timefmt
from fibric.connectors import tools as tooling

Phase = Literal["connecting", "connected", "backoff", "stopped"]
Connection = Literal["connected", "degraded", "disconnected"]


@dataclass(frozen=True)
class ConnectorState:
    tenant_id: str
    name: str
    generation: int
    transport: str  # "stdio: python server.py" / "http: https://..."
    phase: Phase
    session_alive: bool
    listed: bool  # the server's tools were listed at least once
    tools: tuple[tooling.ToolInfo, ...] = ()  # the last listing, server order
    capabilities: Mapping[str, str] = field(default_factory=dict)  # capability -> tool, from the spec
    changed_tools: tuple[str, ...] = ()  # differ from their pin, not acknowledged
    server: Mapping[str, Any] = field(default_factory=dict)
    last_synced_at: datetime | None = None
    last_error: str | None = None
    retry_at: datetime | None = None

    @property
    def missing(self) -> dict[str, str]:
        """capability -> tool, for mapped tools the server does not offer (fail closed)."""
        if not self.listed:
            return {}
        offered = {t.name for t in self.tools}
        return {cap: tool for cap, tool in self.capabilities.items() if tool not in offered}

    @property
    def tool_changed(self) -> bool:
        return bool(self.changed_tools)

    @property
    def connection(self) -> Connection:
        if not (self.phase == "connected" and self.session_alive):
            return "disconnected"
        return "degraded" if self.missing or self.changed_tools else "connected"

    def tool(self, name: str) -> tooling.ToolInfo | None:
        return next((t for t in self.tools if t.name == name), None)

    def conditions(self) -> list[dict[str, str]]:
        """Ready, Connected, CapabilitiesMapped, ToolsChanged (without transition times)."""
        up = self.connection != "disconnected"
        if up:
            connected = _cond("Connected", True, "SessionOpen", self._server_text())
        elif self.phase == "backoff":
            retry = f"; retrying at {timefmt.rfc3339(self.retry_at)}" if self.retry_at else ""
            connected = _cond("Connected", False, "ConnectFailed", f"{self.last_error or 'failed'}{retry}")
        elif self.phase == "stopped":
            connected = _cond("Connected", False, "Stopped", "the connector is not running")
        else:
            connected = _cond("Connected", False, "Connecting", f"opening {self.transport}")

        missing = self.missing
        if not self.listed:
            mapped = _cond(
                "CapabilitiesMapped", None, "NotListed", "the server's tools have not been listed yet"
            )
            changed = _cond("ToolsChanged", None, "NotListed", "the server's tools have not been listed yet")
        else:
            if missing:
                text = "; ".join(f"{cap} -> {tool}" for cap, tool in missing.items())
                mapped = _cond(
                    "CapabilitiesMapped", False, "ToolMissing", f"the server offers no tool for {text}"
                )
            else:
                mapped = _cond("CapabilitiesMapped", True, "AllToolsFound", "")
            if self.changed_tools:
                names = ", ".join(self.changed_tools)
                changed = _cond(
                    "ToolsChanged",
                    True,
                    "DefinitionChanged",
                    f"changed since pinned: {names}; review, then `fibric connector ack {self.name}`",
                )
            else:
                changed = _cond("ToolsChanged", False, "MatchesPins", "")

        if not up:
            ready = _cond("Ready", False, "Disconnected", connected["message"])
        elif missing:
            ready = _cond("Ready", False, "ToolMissing", mapped["message"])
        elif self.changed_tools:
            ready = _cond("Ready", False, "ToolsChanged", changed["message"])
        else:
            ready = _cond("Ready", True, "Connected", "")
        return [ready, connected, mapped, changed]

    def status(
        self, previous: Mapping[str, Any] | None = None, now: datetime | None = None
    ) -> dict[str, Any]:
        """The status document (docs/connectors.md); transition times carried over from `previous`."""
        stamp = timefmt.rfc3339(now or timefmt.now())
        before = {c.get("type"): c for c in (previous or {}).get("conditions", []) if isinstance(c, Mapping)}
        conditions = []
        for cond in self.conditions():
            old = before.get(cond["type"])
            kept = old.get("last_transition_time") if old and old.get("status") == cond["status"] else None
            conditions.append({**cond, "last_transition_time": kept or stamp})
        return {
            "observed_generation": self.generation,
            "conditions": conditions,
            "connection": self.connection,
            "tools": [t.summary() for t in self.tools],
            "last_synced_at": timefmt.rfc3339(self.last_synced_at),
            "last_error": self.last_error,
            "tool_changed": self.tool_changed,
            "changed_tools": list(self.changed_tools),
            "tool_hashes": {t.name: t.pin for t in self.tools},
            "server": dict(self.server) or None,
        }

    def _server_text(self) -> str:
        if not self.server:
            return self.transport
        return (
            f"{self.transport}; server {self.server.get('name')} {self.server.get('version')}, "
            f"protocol {self.server.get('protocol_version')}"
        )


def _cond(kind: str, status: bool | None, reason: str, message: str) -> dict[str, str]:
    text = "Unknown" if status is None else ("True" if status else "False")
    return {"type": kind, "status": text, "reason": reason, "message": message}
