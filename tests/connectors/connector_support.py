"""Helpers for connector tests: specs for real MCP servers, waits, effect counts.

Every server here is a real process speaking MCP: the example order system
(examples/mcp/orders_server.py), a toy server whose behaviour tests switch
on (servers/toy_server.py), and a server published on PyPI
(mcp-server-time). Every wait is bounded.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any

import anyio
from orders_system import HttpOrders

from fibric import connectors
from fibric.specs import models

__all__ = ["HttpOrders"]

ROOT = Path(__file__).resolve().parents[2]
ORDERS_SERVER = ROOT / "examples" / "mcp" / "orders_server.py"
TOY_SERVER = Path(__file__).resolve().parent / "servers" / "toy_server.py"
ORDERS_CAPABILITIES = {
    "orders.read": "orders.read",
    "orders.hold": "orders.hold",
    "orders.notify": "orders.notify",
}
TOY_CAPABILITIES = {
    f"toy.{tool}": tool
    for tool in ("echo", "slow", "whoami", "env", "meta", "fail", "reject", "crash", "grow")
}
FAST = connectors.ConnectorSettings(
    call_timeout=15.0,
    connect_timeout=30.0,
    backoff_initial=0.05,
    backoff_max=0.5,
    backoff_jitter=0.0,
    ping_interval=5.0,
    ping_timeout=5.0,
)
WAIT = 30.0  # upper bound for a server to start and answer, on a loaded CI machine


def stdio_spec(
    script: Path | str,
    *,
    env: dict[str, str] | None = None,
    capabilities: dict[str, str] | None = None,
    args: list[str] | None = None,
) -> models.ConnectorSpec:
    return models.ConnectorSpec.model_validate(
        {
            "transport": {
                "stdio": {"command": sys.executable, "args": [str(script), *(args or [])], "env": env or {}}
            },
            "capabilities": capabilities or ORDERS_CAPABILITIES,
        }
    )


def http_spec(url: str, *, bearer_token_env: str | None = None) -> models.ConnectorSpec:
    http: dict[str, Any] = {"url": url}
    if bearer_token_env:
        http["bearer_token_env"] = bearer_token_env
    return models.ConnectorSpec.model_validate(
        {"transport": {"http": http}, "capabilities": ORDERS_CAPABILITIES}
    )


async def up(rt: connectors.ConnectorRuntime, tenant: str, name: str) -> connectors.ConnectorState:
    """Wait until the connector has a session (connected or degraded)."""
    return await rt.wait_for(tenant, name, lambda s: s.connection != "disconnected", WAIT)


def effects(db: Path, key: str | None = None) -> int:
    """Effects the order system really applied (optionally for one idempotency key)."""
    with sqlite3.connect(db) as conn:
        if key is None:
            return int(conn.execute("SELECT COUNT(*) FROM effects").fetchone()[0])
        return int(
            conn.execute("SELECT COUNT(*) FROM effects WHERE idempotency_key = ?", (key,)).fetchone()[0]
        )


async def wait_until(check: Any, timeout: float = WAIT) -> None:
    """Poll a condition that has no event to wait on (a file appearing, a process exiting)."""
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.02)
