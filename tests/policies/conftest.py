"""Fixtures for the policy engine tests: both engines, the second behind a real HTTP server.

`engine` runs a test once per engine: embedded (regopy in this process) and
OPA (opa-python-client against FakeOpa, a real OPA-protocol server on
127.0.0.1). Budgets are generous (2 s) so a loaded machine cannot turn a
correct decision into a timeout; timeout tests set their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fake_opa import FakeOpa
from policy_support import BUDGET, ENGINES, SHIP_RISK

from fibric import policies


@pytest.fixture
def fake_opa() -> Iterator[FakeOpa]:
    server = FakeOpa().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def embedded() -> Iterator[policies.EmbeddedEngine]:
    engine = policies.EmbeddedEngine(timeout=BUDGET)
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture
def opa(fake_opa: FakeOpa) -> Iterator[policies.OpaEngine]:
    engine = policies.OpaEngine(fake_opa.url, timeout=BUDGET)
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> policies.Engine:
    """Each engine in turn; the test must pass identically on both."""
    chosen: policies.Engine = request.getfixturevalue(request.param)
    return chosen


@pytest.fixture
def ship_risk() -> policies.CompiledPolicy:
    source = SHIP_RISK.read_text(encoding="utf-8")
    return policies.compile(source, name=str(SHIP_RISK), policy_id="pol_ship_risk")


@pytest.fixture
def compile_rego() -> Callable[..., policies.CompiledPolicy]:
    """Compile an inline test policy (the default query is data.<package>.decision)."""

    def make(source: str, **kwargs: object) -> policies.CompiledPolicy:
        return policies.compile(source, name="test.rego", policy_id="pol_test", **kwargs)  # type: ignore[arg-type]

    return make
