"""Tool pins in the state store: the SQL side of `connectors.PinStore`.

Pins must survive restarts and be shared by every replica, so they live in
the same database as the objects they belong to (table
`connector_tool_pins`, migration 3). A first sighting never overwrites a pin
(`ON CONFLICT DO NOTHING`); only an acknowledgement moves one, so a poisoned
tool cannot pin itself by being listed again. docs/connectors.md describes
the table and each method's SQL.
"""

from __future__ import annotations

from collections.abc import Mapping

from fibric import timefmt
from fibric.store import state as state_module


class SQLPinStore:
    """`connectors.PinStore` on a StateStore (SQLite or PostgreSQL); blocking, thread-safe."""

    def __init__(self, state: state_module.StateStore) -> None:
        self.state = state

    def load(self, tenant_id: str, connector: str) -> dict[str, str]:
        """Tool name -> pinned sha256 for one connector."""
        with self.state.backend.transaction(write=False) as cur:
            cur.execute(
                "SELECT tool, sha256 FROM connector_tool_pins WHERE tenant_id = ? AND connector = ?",
                (tenant_id, connector),
            )
            rows = cur.fetchall()
        return {str(tool): str(digest) for tool, digest in rows}

    def record_new(self, tenant_id: str, connector: str, pins: Mapping[str, str]) -> None:
        """Pin tools seen for the first time; a tool that already has a pin keeps it."""
        self._write(tenant_id, connector, pins, "DO NOTHING")

    def acknowledge(self, tenant_id: str, connector: str, pins: Mapping[str, str]) -> None:
        """Set these tools' pins (insert or overwrite); pins of other tools stay."""
        self._write(
            tenant_id, connector, pins,
            "DO UPDATE SET sha256 = excluded.sha256, pinned_at = excluded.pinned_at",
        )

    def forget(self, tenant_id: str, connector: str) -> None:
        """Drop every pin of a deleted connector."""
        with self.state.backend.transaction(write=True) as cur:
            cur.execute(
                "DELETE FROM connector_tool_pins WHERE tenant_id = ? AND connector = ?",
                (tenant_id, connector),
            )

    def _write(self, tenant_id: str, connector: str, pins: Mapping[str, str], on_conflict: str) -> None:
        if not pins:
            return
        stamp = timefmt.rfc3339(timefmt.now())
        with self.state.backend.transaction(write=True) as cur:
            for tool, digest in pins.items():
                cur.execute(
                    "INSERT INTO connector_tool_pins (tenant_id, connector, tool, sha256, pinned_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, connector, tool) " + on_conflict,
                    (tenant_id, connector, tool, digest, stamp),
                )
