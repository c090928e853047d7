"""The status a connector reports, and the backoff it reconnects with."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from mcp import types as mcp_types

from fibric import connectors

T0 = datetime(2026, 6, 14, 9, 0, 0, tzinfo=UTC)
T1 = datetime(2026, 6, 14, 9, 5, 0, tzinfo=UTC)


def tool(name: str, read_only: bool = False) -> connectors.ToolInfo:
    return connectors.ToolInfo.from_mcp(
        mcp_types.Tool(
            name=name,
            input_schema={"type": "object"},
            annotations=mcp_types.ToolAnnotations(read_only_hint=read_only),
        )
    )


def state(**fields: Any) -> connectors.ConnectorState:
    base: dict[str, Any] = {
        "tenant_id": "t1",
        "name": "magento",
        "generation": 3,
        "transport": "stdio: python orders_server.py",
        "phase": "connected",
        "session_alive": True,
        "listed": True,
        "tools": (tool("orders.read", read_only=True), tool("orders.hold")),
        "capabilities": {"orders.read": "orders.read", "orders.hold": "orders.hold"},
        "last_synced_at": T0,
    }
    return connectors.ConnectorState(**{**base, **fields})


def conditions(status: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["type"]: c for c in status["conditions"]}


def test_a_healthy_connector_is_connected_and_ready() -> None:
    status = state().status(now=T0)

    assert status["connection"] == "connected"
    assert status["observed_generation"] == 3
    assert status["tools"] == [
        {"name": "orders.read", "side_effect": False},
        {"name": "orders.hold", "side_effect": True},
    ]
    assert status["last_synced_at"] == "2026-06-14T09:00:00Z"
    assert status["last_error"] is None
    assert {k: (v["status"], v["reason"]) for k, v in conditions(status).items()} == {
        "Ready": ("True", "Connected"),
        "Connected": ("True", "SessionOpen"),
        "CapabilitiesMapped": ("True", "AllToolsFound"),
        "ToolsChanged": ("False", "MatchesPins"),
    }


def test_a_missing_tool_or_a_changed_tool_degrades_the_connector() -> None:
    missing = state(capabilities={"orders.hold": "orders.hold", "orders.notify": "notify"})
    changed = state(changed_tools=("orders.hold",))

    assert missing.connection == "degraded"
    assert missing.missing == {"orders.notify": "notify"}
    assert conditions(missing.status())["Ready"]["reason"] == "ToolMissing"
    assert changed.connection == "degraded"
    assert changed.status()["tool_changed"] is True
    assert conditions(changed.status())["Ready"]["reason"] == "ToolsChanged"


def test_without_a_live_session_the_connector_is_disconnected_but_keeps_its_last_tools() -> None:
    lost = state(phase="connecting", session_alive=False, last_error="server exited with code -9")
    backoff = state(phase="backoff", session_alive=False, last_error="ConnectError", retry_at=T1)

    assert lost.connection == "disconnected"
    assert lost.status()["tools"] == state().status()["tools"]
    assert lost.status()["last_error"] == "server exited with code -9"
    assert (
        conditions(backoff.status())["Connected"]["message"]
        == "ConnectError; retrying at 2026-06-14T09:05:00Z"
    )


def test_never_listed_means_unknown_mapping_and_no_tools() -> None:
    status = state(phase="connecting", session_alive=False, listed=False, tools=()).status()

    assert status["connection"] == "disconnected"
    assert status["tools"] == []
    assert conditions(status)["CapabilitiesMapped"]["status"] == "Unknown"


def test_transition_times_hold_while_a_condition_keeps_its_status() -> None:
    first = state().status(now=T0)
    same = state().status(previous=first, now=T1)
    flipped = state(changed_tools=("orders.hold",)).status(previous=first, now=T1)

    assert all(c["last_transition_time"] == "2026-06-14T09:00:00Z" for c in same["conditions"])
    assert conditions(flipped)["ToolsChanged"]["last_transition_time"] == "2026-06-14T09:05:00Z"
    assert conditions(flipped)["Connected"]["last_transition_time"] == "2026-06-14T09:00:00Z"


def test_backoff_doubles_up_to_the_cap_and_jitter_only_shortens() -> None:
    settings = connectors.ConnectorSettings(backoff_initial=0.5, backoff_max=4.0, backoff_jitter=0.0)
    rng = random.Random(7)

    assert [settings.backoff(n, rng) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    jittered = connectors.ConnectorSettings(backoff_initial=1.0, backoff_max=8.0, backoff_jitter=0.2)
    delays = [jittered.backoff(3, rng) for _ in range(200)]
    assert all(3.2 <= d <= 4.0 for d in delays)
    assert len(set(delays)) > 1
