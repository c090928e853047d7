"""The example order system through the connector runtime, over stdio and streamable HTTP.

Discovery, capability mapping, side effects from annotations, calls whose
idempotency key travels in `_meta` (effects counted in the server's SQLite
database), and results that come back intact.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from connector_support import FAST, ORDERS_SERVER, HttpOrders, effects, http_spec, stdio_spec, up

from fibric import connectors

pytestmark = pytest.mark.anyio

TENANT = "t_acme"


@dataclass
class Orders:
    runtime: connectors.ConnectorRuntime
    db: Path
    transport: str


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", params=["stdio", "http"])
async def orders(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Orders]:
    """A `magento` connector to the order system, over each transport (one server per module:
    each test uses its own idempotency keys, so they do not disturb each other)."""
    db = tmp_path_factory.mktemp("orders") / "orders.db"
    async with connectors.ConnectorRuntime(connectors.MemoryPinStore(), FAST) as runtime:
        if request.param == "stdio":
            await runtime.ensure(TENANT, "magento", stdio_spec(ORDERS_SERVER, env={"ORDERS_DB": str(db)}))
            await up(runtime, TENANT, "magento")
            yield Orders(runtime, db, "stdio")
            return
        server = HttpOrders(db)
        server.start()
        try:
            await runtime.ensure(TENANT, "magento", http_spec(server.url))
            await up(runtime, TENANT, "magento")
            yield Orders(runtime, db, "http")
        finally:
            await runtime.remove(TENANT, "magento")
            server.stop()


async def test_discovers_tools_with_side_effects_from_annotations(orders: Orders) -> None:
    state = orders.runtime.state(TENANT, "magento")

    assert state.connection == "connected"
    assert [t.summary() for t in state.tools] == [
        {"name": "orders.read", "side_effect": False},
        {"name": "orders.hold", "side_effect": True},
        {"name": "orders.notify", "side_effect": True},
    ]
    assert state.tool("orders.hold") is not None and state.tool("orders.hold").idempotent  # type: ignore[union-attr]
    assert not state.tool("orders.notify").idempotent  # type: ignore[union-attr]
    assert state.server["name"] == "orders"
    assert state.last_synced_at is not None


async def test_status_document_follows_the_convention(orders: Orders) -> None:
    status = orders.runtime.status(TENANT, "magento")

    assert status["connection"] == "connected"
    assert status["observed_generation"] == 1
    assert status["tools"][1] == {"name": "orders.hold", "side_effect": True}
    assert status["last_synced_at"].endswith("Z")
    assert status["last_error"] is None
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["CapabilitiesMapped"]["status"] == "True"
    assert conditions["ToolsChanged"]["status"] == "False"
    assert all(c["last_transition_time"].endswith("Z") for c in status["conditions"])


async def test_capabilities_resolve_to_tools_for_the_policy_input(orders: Orders) -> None:
    binding = orders.runtime.resolve(TENANT, "orders.hold")

    assert binding.connector == "magento"
    assert binding.policy_input() == {
        "id": "cn_magento",
        "name": "magento",
        "tool": "orders.hold",
        "side_effect": True,
        "idempotent": True,
        "annotations": {
            "readOnlyHint": False,
            "destructiveHint": False,
            "idempotentHint": True,
            "openWorldHint": False,
        },
        "tool_changed": False,
    }


async def test_a_call_returns_the_result_intact(orders: Orders) -> None:
    result = await orders.runtime.call(TENANT, "orders.read", {"order_id": "SO-10884"}, None)

    assert result.is_error is False
    assert result.tool == "orders.read"
    assert result.structured_content["orders"][0]["order_id"] == "SO-10884"
    assert result.content[0]["type"] == "text"
    assert '"SO-10884"' in result.content[0]["text"]
    assert result.to_mcp()["structuredContent"] == result.structured_content


async def test_a_tool_failure_is_a_result_not_an_exception(orders: Orders) -> None:
    result = await orders.runtime.call(TENANT, "orders.read", {"order_id": "SO-404"}, None)

    assert result.is_error is True
    assert "no order 'SO-404'" in result.content[0]["text"]
    assert result.to_mcp()["isError"] is True


async def test_the_same_idempotency_key_takes_effect_once(orders: Orders) -> None:
    rt = orders.runtime
    first = await rt.call(TENANT, "orders.notify", {"order_id": "SO-10886", "to": "owner"}, "n-1")
    again = await rt.call(TENANT, "orders.notify", {"order_id": "SO-10886", "to": "owner"}, "n-1")
    other = await rt.call(TENANT, "orders.notify", {"order_id": "SO-10886", "to": "owner"}, "n-2")

    assert again.structured_content == first.structured_content
    assert other.structured_content["notification_id"] != first.structured_content["notification_id"]
    assert effects(orders.db, "n-1") == 1
    assert effects(orders.db, "n-2") == 1


async def test_concurrent_calls_with_one_key_take_effect_once(orders: Orders) -> None:
    results = []

    async def notify() -> None:
        results.append(await orders.runtime.call(TENANT, "orders.notify", {"order_id": "SO-10884"}, "burst"))

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(notify)

    assert len({r.structured_content["notification_id"] for r in results}) == 1
    assert effects(orders.db, "burst") == 1


async def test_calls_without_a_key_each_take_effect(orders: Orders) -> None:
    before = effects(orders.db)
    for _ in range(3):
        await orders.runtime.call(TENANT, "orders.notify", {"order_id": "SO-10884"}, None)

    assert effects(orders.db) == before + 3


async def test_the_entity_key_in_meta_names_the_order(orders: Orders) -> None:
    result = await orders.runtime.call(
        TENANT, "orders.hold", {"reason": "will miss ship-by date"}, "hold-1", entity_key="order:SO-10886"
    )

    assert result.structured_content["order_id"] == "SO-10886"
    assert result.structured_content["status"] == "on_hold"
    with sqlite3.connect(orders.db) as conn:
        assert conn.execute("SELECT status FROM orders WHERE id = 'SO-10886'").fetchone() == ("on_hold",)


async def test_holding_a_held_order_changes_nothing(orders: Orders) -> None:
    first = await orders.runtime.call(
        TENANT, "orders.hold", {"order_id": "SO-10884", "reason": "late"}, "hh-1"
    )
    second = await orders.runtime.call(
        TENANT, "orders.hold", {"order_id": "SO-10884", "reason": "late"}, "hh-2"
    )

    assert first.structured_content["status"] == second.structured_content["status"] == "on_hold"
    assert second.structured_content["changed"] is False
    assert effects(orders.db, "hh-2") == 0


async def test_a_reused_key_with_other_arguments_is_refused(orders: Orders) -> None:
    rt = orders.runtime
    await rt.call(TENANT, "orders.notify", {"order_id": "SO-10884", "message": "a"}, "k-reuse")
    result = await rt.call(TENANT, "orders.notify", {"order_id": "SO-10884", "message": "b"}, "k-reuse")

    assert result.is_error is True
    assert "already used with other arguments" in result.content[0]["text"]
    assert effects(orders.db, "k-reuse") == 1


async def test_one_session_serves_many_concurrent_calls(orders: Orders) -> None:
    results = []

    async def read() -> None:
        results.append(await orders.runtime.call(TENANT, "orders.read", {"status": "open"}, None))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(read)

    assert len(results) == 50
    assert all(not r.is_error for r in results)
    assert orders.runtime.state(TENANT, "magento").connection == "connected"
