"""Fixtures for the observability tests: JSON logs captured for one test, the root logger restored after."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from fibric import logs


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The root logger writes JSON lines (as `FIBRIC_LOG_FORMAT=json` serve does) into the yielded buffer."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    logs.configure(logs.LogSettings.from_env({"FIBRIC_LOG_FORMAT": "json"}), stream=stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
