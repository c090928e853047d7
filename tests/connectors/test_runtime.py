"""The runtime's contract with the controller and the executor.

Connectors are per tenant; a capability resolves to exactly one connector
of the calling tenant or fails closed; the idempotency and entity keys
travel in the request's `_meta`; the controller hears about every change.
"""

from __future__ import annotations

import pytest
from connector_support import FAST, TOY_CAPABILITIES, TOY_SERVER, stdio_spec, up

from fibric import connectors, errors

pytestmark = pytest.mark.anyio

TOY = stdio_spec(TOY_SERVER, capabilities=TOY_CAPABILITIES)


async def test_a_call_right_after_ensure_waits_for_the_session(runtime: connectors.ConnectorRuntime) -> None:
    state = await runtime.ensure("t_acme", "toy", TOY)
    assert state.connection == "disconnected"  # just started

    result = await runtime.call("t_acme", "toy.echo", {"text": "first"}, None)

    assert result.content == [{"type": "text", "text": "first"}]


async def test_keys_travel_in_the_request_meta(runtime: connectors.ConnectorRuntime) -> None:
    await runtime.ensure("t_acme", "toy", TOY)

    result = await runtime.call(
        "t_acme", "toy.meta", {}, "ship-risk:SO-10884:hold", entity_key="order:SO-10884"
    )

    assert result.structured_content["meta"] == {
        "fibric.io/idempotency_key": "ship-risk:SO-10884:hold",
        "fibric.io/entity_key": "order:SO-10884",
    }
    assert connectors.IDEMPOTENCY_META_KEY == "fibric.io/idempotency_key"


async def test_another_tenants_connectors_are_invisible(runtime: connectors.ConnectorRuntime) -> None:
    await runtime.ensure("t_acme", "toy", TOY)
    await up(runtime, "t_acme", "toy")

    with pytest.raises(connectors.CapabilityUnavailable, match=r"no connector maps capability 'toy\.echo'"):
        runtime.resolve("t_other", "toy.echo")
    with pytest.raises(connectors.CapabilityUnavailable):
        await runtime.call("t_other", "toy.echo", {"text": "x"}, None)
    with pytest.raises(errors.NotFound):
        runtime.state("t_other", "toy")
    assert runtime.names("t_other") == []


async def test_a_capability_two_connectors_map_needs_a_connector_name(
    runtime: connectors.ConnectorRuntime,
) -> None:
    await runtime.ensure("t_acme", "toy-a", TOY)
    await runtime.ensure("t_acme", "toy-b", TOY)
    await up(runtime, "t_acme", "toy-a")
    await up(runtime, "t_acme", "toy-b")

    with pytest.raises(connectors.CapabilityUnavailable, match=r"several connectors \(toy-a, toy-b\)"):
        runtime.resolve("t_acme", "toy.echo")
    assert runtime.resolve("t_acme", "toy.echo", connector="toy-b").connector == "toy-b"
    result = await runtime.call("t_acme", "toy.echo", {"text": "b"}, None, connector="toy-b")
    assert result.connector == "toy-b"
    with pytest.raises(connectors.CapabilityUnavailable, match=r"does not map capability 'orders\.hold'"):
        await runtime.call("t_acme", "orders.hold", {}, "k", connector="toy-a")
    with pytest.raises(errors.NotFound):
        await runtime.call("t_acme", "toy.echo", {"text": "x"}, None, connector="toy-c")


async def test_the_controller_hears_of_every_change(pins: connectors.MemoryPinStore) -> None:
    heard: list[tuple[str, str]] = []
    async with connectors.ConnectorRuntime(pins, FAST, on_change=lambda t, n: heard.append((t, n))) as rt:
        await rt.ensure("t_acme", "toy", TOY)
        await up(rt, "t_acme", "toy")
        assert heard and set(heard) == {("t_acme", "toy")}

        count = len(heard)
        await rt.ensure("t_acme", "toy", TOY, generation=2)
        assert len(heard) > count
        assert rt.status("t_acme", "toy")["observed_generation"] == 2


async def test_a_tools_own_failure_is_a_result(runtime: connectors.ConnectorRuntime) -> None:
    await runtime.ensure("t_acme", "toy", TOY)

    result = await runtime.call("t_acme", "toy.fail", {"message": "refused by the shop"}, "k")

    assert result.is_error is True
    assert result.content[0]["text"].endswith("refused by the shop")


async def test_a_protocol_error_from_the_server_is_a_rejection(runtime: connectors.ConnectorRuntime) -> None:
    await runtime.ensure("t_acme", "toy", TOY)

    with pytest.raises(connectors.ToolCallRejected, match="order id must look like SO-") as caught:
        await runtime.call("t_acme", "toy.reject", {}, "k")

    assert caught.value.code == -32602
    assert caught.value.in_doubt is False
