"""Tool pins: the hash of each tool's definition, recorded the first time it is seen.

A server that later changes a tool's description or schema (an update, or a
poisoned tool rewriting what the model reads) no longer matches its pin; the
connector reports ToolsChanged and the policy input carries
`tool_changed: true` until a person acknowledges the new definitions.

Pins must outlive the process, so they belong in the state store; the
connector runtime only needs this small interface. Its methods are blocking
(the runtime calls them on a worker thread), and `record_new` never
overwrites: only `acknowledge` moves a pin. The SQL implementation is
described in docs/connectors.md.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Protocol


class PinStore(Protocol):
    """Where tool pins persist, per tenant and connector name."""

    def load(self, tenant_id: str, connector: str) -> dict[str, str]:
        """Tool name -> pinned sha256 for one connector."""
        ...

    def record_new(self, tenant_id: str, connector: str, pins: Mapping[str, str]) -> None:
        """Pin tools seen for the first time; a tool that already has a pin keeps it."""
        ...

    def acknowledge(self, tenant_id: str, connector: str, pins: Mapping[str, str]) -> None:
        """Set these tools' pins (insert or overwrite); pins of other tools stay."""
        ...

    def forget(self, tenant_id: str, connector: str) -> None:
        """Drop every pin of a deleted connector."""
        ...


class MemoryPinStore:
    """Pins in a dict: for tests and for a runtime that need not survive a restart."""

    def __init__(self) -> None:
        self._pins: dict[tuple[str, str], dict[str, str]] = {}
        self._lock = threading.Lock()  # the runtime calls from worker threads

    def load(self, tenant_id: str, connector: str) -> dict[str, str]:
        with self._lock:
            return dict(self._pins.get((tenant_id, connector), {}))

    def record_new(self, tenant_id: str, connector: str, pins: Mapping[str, str]) -> None:
        with self._lock:
            current = self._pins.setdefault((tenant_id, connector), {})
            for tool, digest in pins.items():
                current.setdefault(tool, digest)

    def acknowledge(self, tenant_id: str, connector: str, pins: Mapping[str, str]) -> None:
        with self._lock:
            self._pins.setdefault((tenant_id, connector), {}).update(pins)

    def forget(self, tenant_id: str, connector: str) -> None:
        with self._lock:
            self._pins.pop((tenant_id, connector), None)


def changed_tools(pinned: Mapping[str, str], observed: Mapping[str, str]) -> list[str]:
    """Tools whose observed definition differs from their pin, in observed order."""
    return [name for name, digest in observed.items() if name in pinned and pinned[name] != digest]
