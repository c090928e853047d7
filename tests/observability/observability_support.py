"""Reading a /metrics scrape and JSON log lines back, for the observability tests."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from typing import Any

from prometheus_client import parser

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

__all__ = ["TestClient", "json_lines", "label_values", "total", "wait_for"]

WAIT = 60.0


def total(scrape: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 when there is none)."""
    found = 0.0
    for family in parser.text_string_to_metric_families(scrape):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                found += sample.value
    return found


def label_values(scrape: str, label: str) -> set[str]:
    """Every value `label` takes in the scrape."""
    return {sample.labels[label] for family in parser.text_string_to_metric_families(scrape)
            for sample in family.samples if label in sample.labels}


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of `text` parsed as one JSON object (a line that is not one fails the test)."""
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all(isinstance(line, dict) for line in lines)
    return lines


def wait_for(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found
