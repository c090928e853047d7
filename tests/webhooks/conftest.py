"""Fixtures for the webhook tests: a receiver on loopback and a clock the tests move."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from webhook_support import Clock, Receiver, running_receiver


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


@pytest.fixture
def clock() -> Clock:
    return Clock()
