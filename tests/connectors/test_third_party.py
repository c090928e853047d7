"""A published MCP server this project did not write: mcp-server-time from PyPI.

Connectors must work with any standards-compliant server; this one is built
by other people, on the SDK's high-level server, and runs offline over stdio.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from connector_support import FAST, up

from fibric import connectors
from fibric.specs import models

pytestmark = pytest.mark.anyio

TENANT = "t_acme"
TIME_SERVER = Path(sys.executable).parent / "mcp-server-time"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def clock() -> AsyncIterator[connectors.ConnectorRuntime]:
    if not TIME_SERVER.exists():
        pytest.fail("mcp-server-time is not installed: pip install the test extras")
    spec = models.ConnectorSpec.model_validate(
        {
            "kind": "operator",
            "transport": {"stdio": {"command": str(TIME_SERVER), "args": ["--local-timezone", "UTC"]}},
            "capabilities": {"time.now": "get_current_time", "time.convert": "convert_time"},
        }
    )
    async with connectors.ConnectorRuntime(connectors.MemoryPinStore(), FAST) as runtime:
        await runtime.ensure(TENANT, "clock", spec)
        await up(runtime, TENANT, "clock")
        yield runtime


async def test_discovers_the_published_servers_tools(clock: connectors.ConnectorRuntime) -> None:
    state = clock.state(TENANT, "clock")

    assert state.connection == "connected"
    assert state.server["name"] == "mcp-time"
    assert [t.summary() for t in state.tools] == [
        {"name": "get_current_time", "side_effect": False},
        {"name": "convert_time", "side_effect": False},
    ]


async def test_calls_the_published_server_and_gets_structured_content(
    clock: connectors.ConnectorRuntime,
) -> None:
    result = await clock.call(
        TENANT,
        "time.convert",
        {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Kolkata"},
        "conv-1",
    )

    assert result.is_error is False
    assert result.structured_content["target"]["timezone"] == "Asia/Kolkata"
    assert result.structured_content["time_difference"] == "+5.5h"


async def test_a_tool_error_from_the_published_server_comes_back_as_is_error(
    clock: connectors.ConnectorRuntime,
) -> None:
    result = await clock.call(TENANT, "time.now", {"timezone": "Mars/Olympus_Mons"}, None)

    assert result.is_error is True
    assert "Invalid timezone" in result.content[0]["text"]
