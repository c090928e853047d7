"""Fixtures for the bulkhead tests: a served installation with tenant A's faults declared and busy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bulkhead_support import Installation, b_orders, installation
from noisy_tenant import TenantA


@pytest.fixture
def noisy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Installation, TenantA]]:
    """`fibric serve` with tenants A and B; A has declared the faults named by the parameter ("a".."e")."""
    faults = str(request.param)
    with installation(tmp_path, b_orders("SO-B", 100)) as setup:
        a = TenantA(setup, list(faults))
        a.declare()
        a.start()
        try:
            a.wait_in_flight()  # B starts with every one of A's faults already holding something
            yield setup, a
        finally:
            a.stop()
