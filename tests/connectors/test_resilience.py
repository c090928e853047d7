"""Sessions under failure: timeouts, a server killed mid-call, servers that never come up.

The connector keeps one long-lived session per server. A call that outlives
its timeout fails on its own; a server that dies mid-call fails that call at
once (not after its timeout) and the next call gets a fresh session; a server
that cannot start is retried with backoff while calls fail fast, naming why.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from connector_support import TOY_CAPABILITIES, TOY_SERVER, stdio_spec, up, wait_until

from fibric import connectors
from fibric.specs import models

pytestmark = pytest.mark.anyio

TENANT = "t_acme"


def toy(**env: str) -> models.ConnectorSpec:
    return stdio_spec(TOY_SERVER, env=env, capabilities=TOY_CAPABILITIES)


async def pid_of(rt: connectors.ConnectorRuntime) -> int:
    result = await rt.call(TENANT, "toy.whoami", {}, None)
    return int(result.structured_content["pid"])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_call_past_its_timeout_fails_and_the_session_survives(
    runtime: connectors.ConnectorRuntime,
) -> None:
    await runtime.ensure(TENANT, "toy", toy())
    await up(runtime, TENANT, "toy")
    pid = await pid_of(runtime)

    started = time.monotonic()
    with pytest.raises(connectors.CallTimeout) as caught:
        await runtime.call(TENANT, "toy.slow", {"seconds": 30}, "k", timeout=0.5)

    assert time.monotonic() - started < 5
    assert caught.value.in_doubt is True
    assert "no answer within 0.5s" in str(caught.value)
    assert (await runtime.call(TENANT, "toy.echo", {"text": "still here"}, None)).content[0][
        "text"
    ] == "still here"
    assert await pid_of(runtime) == pid


async def test_a_server_killed_mid_call_fails_that_call_and_the_next_gets_a_fresh_session(
    runtime: connectors.ConnectorRuntime, tmp_path: Path
) -> None:
    mark = tmp_path / "slow.started"
    await runtime.ensure(TENANT, "toy", toy(TOY_MARK_FILE=str(mark)))
    await up(runtime, TENANT, "toy")
    first_pid = await pid_of(runtime)
    failure: list[BaseException] = []

    async def long_call() -> None:
        try:
            await runtime.call(TENANT, "toy.slow", {"seconds": 30}, "k-slow", timeout=20)
        except connectors.CallFailed as e:
            failure.append(e)

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(long_call)
        await wait_until(mark.exists)  # the call is inside the server
        os.kill(first_pid, signal.SIGKILL)

    assert time.monotonic() - started < 10  # failed at once, not after the 20 s timeout
    assert len(failure) == 1
    assert "session lost mid-call" in str(failure[0])
    assert "exited with code -9" in str(failure[0])
    assert failure[0].in_doubt is True  # type: ignore[attr-defined]

    second_pid = await pid_of(runtime)
    assert second_pid != first_pid
    state = runtime.state(TENANT, "toy")
    assert state.connection == "degraded" or state.connection == "connected"
    assert state.last_error is not None and "exited with code -9" in state.last_error


async def test_a_server_that_exits_during_a_call_is_replaced(runtime: connectors.ConnectorRuntime) -> None:
    await runtime.ensure(TENANT, "toy", toy())
    await up(runtime, TENANT, "toy")
    first_pid = await pid_of(runtime)

    with pytest.raises(connectors.CallFailed, match="exited with code 3"):
        await runtime.call(TENANT, "toy.crash", {}, "k-crash")

    assert await pid_of(runtime) != first_pid


async def test_a_server_that_cannot_start_is_retried_and_calls_fail_fast(
    runtime: connectors.ConnectorRuntime,
) -> None:
    code = "import sys; print('ORDERS_DB is not writable', file=sys.stderr); sys.exit(2)"
    spec = models.ConnectorSpec.model_validate(
        {
            "transport": {"stdio": {"command": sys.executable, "args": ["-c", code]}},
            "capabilities": {"orders.hold": "orders.hold"},
        }
    )
    await runtime.ensure(TENANT, "broken", spec)

    state = await runtime.wait_for(TENANT, "broken", lambda s: s.phase == "backoff", 30)
    assert state.connection == "disconnected"
    assert state.last_error is not None
    assert "exited with code 2" in state.last_error
    assert "ORDERS_DB is not writable" in state.last_error
    conditions = {c["type"]: c for c in state.status()["conditions"]}
    assert conditions["Connected"]["reason"] == "ConnectFailed"
    assert conditions["Ready"]["status"] == "False"
    assert conditions["CapabilitiesMapped"]["status"] == "Unknown"

    started = time.monotonic()
    with pytest.raises(connectors.NotConnected) as caught:
        await runtime.call(TENANT, "orders.hold", {}, "k", timeout=20)
    assert time.monotonic() - started < 2
    assert caught.value.in_doubt is False
    assert "exited with code 2" in str(caught.value)


async def test_a_server_that_keeps_dying_after_it_opens_is_backed_off(
    runtime: connectors.ConnectorRuntime,
) -> None:
    await runtime.ensure(TENANT, "toy", toy(TOY_EXIT_AFTER_LIST="1"))

    state = await runtime.wait_for(TENANT, "toy", lambda s: s.phase == "backoff", 60)

    assert "exited with code 4" in (state.last_error or "")
    assert state.listed  # it did open, more than once


async def test_a_command_that_does_not_exist_is_reported(runtime: connectors.ConnectorRuntime) -> None:
    spec = models.ConnectorSpec.model_validate(
        {
            "transport": {"stdio": {"command": "fibric-no-such-mcp-server"}},
            "capabilities": {"orders.hold": "orders.hold"},
        }
    )
    await runtime.ensure(TENANT, "missing", spec)

    state = await runtime.wait_for(TENANT, "missing", lambda s: s.last_error is not None, 30)

    assert "cannot start 'fibric-no-such-mcp-server'" in (state.last_error or "")
    assert state.connection == "disconnected"


async def test_an_unreachable_http_server_is_disconnected_with_the_error(
    runtime: connectors.ConnectorRuntime,
) -> None:
    spec = models.ConnectorSpec.model_validate(
        {
            "transport": {"http": {"url": "http://127.0.0.1:9/mcp"}},
            "capabilities": {"orders.hold": "orders.hold"},
        }
    )
    await runtime.ensure(TENANT, "far", spec)

    state = await runtime.wait_for(TENANT, "far", lambda s: s.phase == "backoff", 30)

    assert state.connection == "disconnected"
    assert "ConnectError" in (state.last_error or "")


async def test_removing_a_connector_stops_its_server(runtime: connectors.ConnectorRuntime) -> None:
    await runtime.ensure(TENANT, "toy", toy())
    await up(runtime, TENANT, "toy")
    pid = await pid_of(runtime)

    await runtime.remove(TENANT, "toy")

    await wait_until(lambda: not alive(pid), 10)
    assert runtime.names(TENANT) == []
    with pytest.raises(connectors.CapabilityUnavailable):
        await runtime.call(TENANT, "toy.echo", {"text": "x"}, None)


async def test_leaving_the_runtime_stops_every_server(pins: connectors.MemoryPinStore) -> None:
    async with connectors.ConnectorRuntime(pins) as rt:
        await rt.ensure(TENANT, "toy", toy())
        await up(rt, TENANT, "toy")
        pid = await pid_of(rt)

    await wait_until(lambda: not alive(pid), 10)


async def test_a_new_transport_restarts_the_session_and_a_new_mapping_does_not(
    runtime: connectors.ConnectorRuntime, tmp_path: Path
) -> None:
    await runtime.ensure(TENANT, "toy", toy())
    await up(runtime, TENANT, "toy")
    pid = await pid_of(runtime)

    remapped = toy().model_copy(update={"capabilities": {**TOY_CAPABILITIES, "toy.say": "echo"}})
    state = await runtime.ensure(TENANT, "toy", remapped, generation=2)
    assert state.generation == 2
    assert (await runtime.call(TENANT, "toy.say", {"text": "hi"}, None)).content[0]["text"] == "hi"
    assert await pid_of(runtime) == pid

    await runtime.ensure(TENANT, "toy", toy(EXTRA="1"), generation=3)
    await up(runtime, TENANT, "toy")
    assert await pid_of(runtime) != pid


async def test_a_tenant_whose_server_hangs_holds_only_its_share_of_calls(
    pins: connectors.MemoryPinStore,
) -> None:
    """Tenant A's calls stuck in a slow tool take A's share; A's next call is refused unsent, B's runs."""
    limits = connectors.ConnectorSettings(call_timeout=5.0, connect_timeout=30.0, backoff_initial=0.05,
                                          backoff_max=0.5, tenant_calls=2)
    async with connectors.ConnectorRuntime(pins, limits) as rt:
        await rt.ensure("t_a", "toy", toy())
        await rt.ensure("t_b", "toy", toy())
        await up(rt, "t_a", "toy")
        await up(rt, "t_b", "toy")
        async with anyio.create_task_group() as tg:
            for n in range(2):
                tg.start_soon(_swallow, rt.call("t_a", "toy.slow", {"seconds": 3}, f"slow-{n}", timeout=4))
            await anyio.sleep(0.3)
            started = time.monotonic()
            with pytest.raises(connectors.TenantBusy) as refused:
                await rt.call("t_a", "toy.echo", {"text": "x"}, "third", timeout=0.5)
            assert refused.value.in_doubt is False and time.monotonic() - started < 2
            result = await rt.call("t_b", "toy.echo", {"text": "b is served"}, None, timeout=2)
            assert result.content[0]["text"] == "b is served"
            assert time.monotonic() - started < 2


async def _swallow(call: Any) -> None:
    with contextlib.suppress(connectors.CallTimeout):
        await call
