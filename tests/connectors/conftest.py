"""Fixtures for connector tests: a runtime with fast backoff, and real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from connector_support import FAST, HttpOrders

from fibric import connectors


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def pins() -> connectors.MemoryPinStore:
    return connectors.MemoryPinStore()


@pytest.fixture
async def runtime(pins: connectors.MemoryPinStore) -> AsyncIterator[connectors.ConnectorRuntime]:
    async with connectors.ConnectorRuntime(pins, FAST) as rt:
        yield rt


@pytest.fixture
def orders_http(tmp_path: Path) -> Iterator[HttpOrders]:
    server = HttpOrders(tmp_path / "orders-http.db")
    server.start()
    try:
        yield server
    finally:
        server.stop()
