"""Many threads deciding at once get their own, correct decisions.

A regopy Interpreter holds the input as state: shared between threads it hands
one caller another caller's decision (measured: 133 wrong of 20,000 with 4
threads). The embedded engine keeps one interpreter per worker process and
hands each worker to one caller at a time; these tests would catch a
regression to a shared one, and answers crossing between callers on the pipes.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterator

import pytest
from fake_opa import FakeOpa
from policy_support import BUDGET, SHIP_RISK, action_input

from fibric import policies

CASES = [
    (action_input("orders.hold", entity="order:A"), ("ALLOW", "orders.hold")),
    (action_input("orders.notify", 0, entity="order:B"), ("ALERT", "orders.notify")),
    (action_input("orders.notify", 5, entity="order:C"), ("BLOCK", "orders.notify.cap")),
    (action_input("orders.cancel", entity="order:D"), ("BLOCK", "default-deny")),
]
THREADS = 16
PER_THREAD = 60


@pytest.fixture(params=["embedded", "embedded-workers", "opa"])
def any_engine(request: pytest.FixtureRequest, fake_opa: FakeOpa) -> Iterator[policies.Engine]:
    engine: policies.Engine
    if request.param == "embedded":
        engine = policies.EmbeddedEngine(timeout=BUDGET)
    elif request.param == "embedded-workers":
        engine = policies.EmbeddedEngine(timeout=BUDGET, workers=4)
    else:
        engine = policies.OpaEngine(fake_opa.url, timeout=BUDGET)
    try:
        yield engine
    finally:
        engine.close()


def test_concurrent_callers_get_their_own_decisions(
    any_engine: policies.Engine, ship_risk: policies.CompiledPolicy
) -> None:
    start = threading.Barrier(THREADS)

    def caller(offset: int) -> list[tuple[tuple[str, str], tuple[str, str]]]:
        start.wait()
        seen = []
        for i in range(PER_THREAD):
            doc, expected = CASES[(i + offset) % len(CASES)]
            decision = policies.evaluate(any_engine, ship_risk, doc)
            seen.append((expected, (decision.decision.value, decision.rule)))
        return seen

    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        outcomes = [pair for seen in pool.map(caller, range(THREADS)) for pair in seen]

    assert [got for _, got in outcomes] == [expected for expected, _ in outcomes], any_engine.stats.snapshot()
    stats = any_engine.stats.snapshot()
    assert stats["decisions"] == THREADS * PER_THREAD
    assert stats["failures"] == {}
    assert stats["non_block_after_failure"] == 0


def test_several_policy_versions_evaluate_side_by_side(any_engine: policies.Engine) -> None:
    versions = [
        policies.compile(
            f'package fibric.v{n}\n\ndecision := {{"decision": "ALLOW", "rule": "version-{n}"}}\n',
            name=f"v{n}.rego",
        )
        for n in range(6)
    ]

    def caller(n: int) -> str:
        return policies.evaluate(any_engine, versions[n % len(versions)], {}).rule

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        rules = list(pool.map(caller, range(120)))

    assert rules == [f"version-{n % len(versions)}" for n in range(120)]


def test_policies_compile_concurrently() -> None:
    source = SHIP_RISK.read_text(encoding="utf-8")

    def build(n: int) -> str:
        renamed = source.replace("package fibric.ship_risk", f"package fibric.ship_risk_{n}")
        return policies.compile(renamed).query

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        queries = list(pool.map(build, range(40)))

    assert queries == [f"data.fibric.ship_risk_{n}.decision" for n in range(40)]
