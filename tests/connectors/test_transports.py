"""Transports: stdio gets an explicit environment; HTTP carries a bearer token from the environment.

A connector's stdio server must see only the variables its spec names plus
PATH, never the control plane's own secrets; an HTTP connector's token lives
in an environment variable the spec names, and never in the spec or status.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from connector_support import (
    ORDERS_SERVER,
    TOY_CAPABILITIES,
    TOY_SERVER,
    WAIT,
    HttpOrders,
    http_spec,
    stdio_spec,
    up,
)

from fibric import connectors, errors
from fibric.connectors import stdio, transports
from fibric.specs import models

pytestmark = pytest.mark.anyio

TENANT = "t_acme"


def test_the_child_environment_is_the_spec_plus_path() -> None:
    spec = models.StdioTransport(command="server", env={"ORDERS_DB": "/data/orders.db"})
    parent = {"PATH": "/usr/bin", "HOME": "/root", "FIBRIC_STORE": "postgresql://secret@db/fibric"}

    assert stdio.child_environment(spec, parent) == {"PATH": "/usr/bin", "ORDERS_DB": "/data/orders.db"}
    assert stdio.child_environment(models.StdioTransport(command="s", env={"PATH": "/opt"}), parent) == {
        "PATH": "/opt"
    }


async def test_a_secret_in_the_parent_environment_is_not_visible_to_the_server(
    monkeypatch: pytest.MonkeyPatch, pins: connectors.MemoryPinStore
) -> None:
    monkeypatch.setenv("FIBRIC_TEST_SECRET", "s3cret-token")
    async with connectors.ConnectorRuntime(pins) as rt:  # reads this process's environment
        await rt.ensure(
            TENANT, "toy", stdio_spec(TOY_SERVER, env={"GREETING": "hi"}, capabilities=TOY_CAPABILITIES)
        )
        await up(rt, TENANT, "toy")

        seen = (await rt.call(TENANT, "toy.env", {}, None)).structured_content

    # CPython itself sets LC_CTYPE in a child started under the C locale (PEP 538).
    assert set(seen["names"]) - {"LC_CTYPE"} == {"GREETING", "PATH"}
    assert "FIBRIC_TEST_SECRET" not in json.dumps(seen)


def test_http_headers_carry_the_bearer_token_from_the_named_variable() -> None:
    spec = models.HttpTransport(
        url="https://orders.example/mcp", headers={"X-Shop": "eu"}, bearer_token_env="TOK"
    )

    assert transports.http_headers(spec, {"TOK": "abc"}) == {"X-Shop": "eu", "Authorization": "Bearer abc"}
    with pytest.raises(errors.TemporaryError, match="environment variable TOK is not set"):
        transports.http_headers(spec, {})


async def test_an_http_connector_authenticates_with_the_token_and_never_reports_it(
    tmp_path: Path, pins: connectors.MemoryPinStore
) -> None:
    server = HttpOrders(tmp_path / "orders.db", token="tok-123")
    server.start()
    try:
        async with connectors.ConnectorRuntime(pins, environ={"ORDERS_TOKEN_VAR": "tok-123"}) as rt:
            await rt.ensure(TENANT, "magento", http_spec(server.url, bearer_token_env="ORDERS_TOKEN_VAR"))
            state = await up(rt, TENANT, "magento")
            result = await rt.call(TENANT, "orders.read", {"order_id": "SO-10884"}, None)

        assert state.connection == "connected"
        assert result.structured_content["orders"][0]["order_id"] == "SO-10884"
        assert "tok-123" not in json.dumps(state.status())

        async with connectors.ConnectorRuntime(pins, environ={"ORDERS_TOKEN_VAR": "wrong"}) as rt:
            await rt.ensure(TENANT, "magento", http_spec(server.url, bearer_token_env="ORDERS_TOKEN_VAR"))
            refused = await rt.wait_for(TENANT, "magento", lambda s: s.phase == "backoff", WAIT)

        assert refused.connection == "disconnected"
        assert refused.last_error is not None and "HTTP 401 Unauthorized" in refused.last_error
        assert "wrong" not in refused.last_error

        async with connectors.ConnectorRuntime(pins, environ={}) as rt:
            await rt.ensure(TENANT, "magento", http_spec(server.url, bearer_token_env="ORDERS_TOKEN_VAR"))
            unset = await rt.wait_for(TENANT, "magento", lambda s: s.phase == "backoff", WAIT)

        assert "ORDERS_TOKEN_VAR is not set" in (unset.last_error or "")
    finally:
        server.stop()


async def test_an_http_server_that_restarts_gets_a_fresh_session(
    runtime: connectors.ConnectorRuntime, orders_http: HttpOrders
) -> None:
    await runtime.ensure(TENANT, "magento", http_spec(orders_http.url))
    await up(runtime, TENANT, "magento")
    await runtime.call(TENANT, "orders.hold", {"order_id": "SO-10884", "reason": "late"}, "h-1")

    orders_http.stop()
    with pytest.raises((connectors.CallFailed, connectors.NotConnected)):
        await runtime.call(TENANT, "orders.read", {"order_id": "SO-10884"}, None, timeout=10)
    down = await runtime.wait_for(TENANT, "magento", lambda s: s.connection == "disconnected", WAIT)
    assert down.last_error is not None

    orders_http.start()  # same port, same database
    await up(runtime, TENANT, "magento")
    result = await runtime.call(TENANT, "orders.read", {"order_id": "SO-10884"}, None)
    assert result.structured_content["orders"][0]["status"] == "on_hold"


async def test_the_example_spec_runs_the_example_server(
    runtime: connectors.ConnectorRuntime, tmp_path: Path
) -> None:
    """examples/specs/connectors.yaml via examples/catalog.yaml, as `fibric serve` in the repo runs it."""
    from fibric import specs, trust

    examples = ORDERS_SERVER.parent.parent
    loaded = specs.load_paths([examples / "specs" / "connectors.yaml"])
    document = loaded[0].document
    assert isinstance(document, specs.Connector)
    grant = trust.Boundary(catalog=trust.Catalog.load(examples / "catalog.yaml")).grant(
        document.spec, trust.Origin.TENANT)
    stdio_part = grant.transport.stdio
    assert stdio_part is not None
    grant = dataclasses.replace(grant, transport=models.Transport(stdio=stdio_part.model_copy(update={
        "cwd": str(examples.parent), "env": {**stdio_part.env, "ORDERS_DB": str(tmp_path / "orders.db")}})))
    spec = document.spec

    await runtime.ensure(TENANT, document.name, spec, grant=grant)
    state = await up(runtime, TENANT, document.name)

    assert state.connection == "connected"
    assert sorted(t.name for t in state.tools) == sorted(document.spec.capabilities.values())
