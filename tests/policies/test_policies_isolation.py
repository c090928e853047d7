"""The embedded engine's worker processes bound a runaway policy's time AND its CPU.

rego-cpp cannot be interrupted, so the engine evaluates in worker processes
and SIGKILLs the one that misses a deadline. These tests run the real thing:
a policy that would loop for seconds, workers killed from outside, tenants
competing for the pool, and close() with evaluations in flight.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import time
from collections.abc import Callable, Iterator, Mapping

import pytest
from policy_support import RUNAWAY, action_input, alive, eventually

from fibric import errors, policies, settings
from fibric.policies import rego

Compile = Callable[..., policies.CompiledPolicy]
FAST, SLOW = {"n": 10}, {"n": 1000}  # RUNAWAY with n=1000 runs for seconds
CALM = 5.0  # budget for decisions that only check the engine still works (a loaded machine is slow)


@pytest.fixture
def runaway(compile_rego: Compile) -> policies.CompiledPolicy:
    return compile_rego(RUNAWAY)


@pytest.fixture
def defaults() -> Iterator[policies.EmbeddedEngine]:
    """The engine exactly as `fibric serve` opens it with no FIBRIC_POLICY_* variable set."""
    engine = policies.open_configured(settings.PolicySettings())
    assert isinstance(engine, policies.EmbeddedEngine)
    try:
        yield engine
    finally:
        engine.close()


def assert_blocked(decision: policies.Decision, cause: str) -> None:
    assert decision.decision is policies.Verdict.BLOCK
    assert decision.rule == f"fail-closed:{cause}", decision
    assert decision.failure == cause


def with_tenant(tenant: str, doc: Mapping[str, object]) -> dict[str, object]:
    return {**doc, "tenant": {"id": tenant}}


def killed_pid(decision: policies.Decision) -> int:
    found = re.search(r"policy worker (\d+) was killed", decision.reasons[0])
    assert found, decision.reasons
    return int(found.group(1))


def test_a_runaway_policy_blocks_at_the_deadline_and_its_cpu_stops(
    defaults: policies.EmbeddedEngine, runaway: policies.CompiledPolicy
) -> None:
    assert defaults.timeout == 0.1 and defaults.pool.size >= 2
    assert policies.evaluate(defaults, runaway, FAST, timeout=CALM).decision is policies.Verdict.ALLOW
    workers = set(defaults.processes()[1:])

    started = time.perf_counter()
    decision = policies.evaluate(defaults, runaway, SLOW)
    elapsed = time.perf_counter() - started

    assert_blocked(decision, "timeout")
    assert elapsed < 1.0  # 100 ms budget; rego-cpp alone would run for seconds
    assert defaults.stats.snapshot()["non_block_after_failure"] == 0
    killed = killed_pid(decision)
    assert killed in workers
    assert eventually(lambda: not alive(killed), 2.0)  # SIGKILLed: its CPU stopped at the deadline
    assert eventually(lambda: len(defaults.processes()) == 1 + defaults.pool.size)  # replaced
    assert killed not in defaults.processes()
    assert policies.evaluate(defaults, runaway, FAST, timeout=CALM).decision is policies.Verdict.ALLOW


def test_the_default_pool_size_and_caps() -> None:
    engine = policies.EmbeddedEngine()
    try:
        assert engine.pool.size == policies.embedded.default_workers() >= 2
        assert engine.tenants.cap == engine.pool.size - 1
        assert engine.breaker.threshold == 3 and engine.breaker.cooldown == 30.0
        assert len(engine.processes()) == 1 + engine.pool.size  # the zygote and the workers, all up
    finally:
        engine.close()


def test_a_policy_that_keeps_timing_out_stops_being_evaluated(runaway: policies.CompiledPolicy) -> None:
    engine = policies.EmbeddedEngine(timeout=0.1, breaker_cooldown=1.0)
    try:
        for _ in range(3):
            assert_blocked(policies.evaluate(engine, runaway, SLOW), "timeout")
        assert engine.pool.counters["killed"] == 3

        started = time.perf_counter()
        blocked = policies.evaluate(engine, runaway, FAST)  # even an input that would be quick

        assert time.perf_counter() - started < 0.05  # not evaluated at all
        assert_blocked(blocked, "timeout")
        assert "circuit is open" in blocked.reasons[0]
        assert engine.pool.counters["killed"] == 3  # no worker spent on it
        # The circuit is per tenant: another tenant running the same Rego is still evaluated.
        other = policies.evaluate(engine, runaway, with_tenant("t_other", FAST), timeout=CALM)
        assert other.decision is policies.Verdict.ALLOW

        time.sleep(1.1)  # the cooldown: then one probe goes through; a slow probe opens it again
        assert "circuit is open" not in policies.evaluate(engine, runaway, SLOW).reasons[0]
        assert engine.pool.counters["killed"] == 4
        assert "circuit is open" in policies.evaluate(engine, runaway, FAST).reasons[0]

        time.sleep(1.1)  # a probe that answers in time closes it
        assert policies.evaluate(engine, runaway, FAST, timeout=CALM).decision is policies.Verdict.ALLOW
        assert policies.evaluate(engine, runaway, FAST, timeout=CALM).decision is policies.Verdict.ALLOW
    finally:
        engine.close()


def test_one_tenants_runaway_policy_does_not_hold_up_another_tenant(
    runaway: policies.CompiledPolicy, ship_risk: policies.CompiledPolicy
) -> None:
    # The budget is far below what the runaway needs on any machine (seconds), and t_a's calls
    # that find its one slot taken give up well before the runaway's deadline.
    engine = policies.EmbeddedEngine(timeout=0.6, workers=2, queue_timeout=0.3)  # tenant cap: 2 - 1 = 1
    assert engine.tenants.cap == 1
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            hogs = [pool.submit(policies.evaluate, engine, runaway, with_tenant("t_a", SLOW))
                    for _ in range(3)]
            assert eventually(lambda: engine.tenants.in_flight("t_a") == 1, 2.0)
            time.sleep(0.1)  # t_a's runaway is now evaluating on a worker, its other calls wait

            started = time.perf_counter()
            decision = policies.evaluate(engine, ship_risk, with_tenant("t_b", action_input("orders.hold")))

            assert time.perf_counter() - started < 1.0
            assert (decision.decision, decision.rule) == (policies.Verdict.ALLOW, "orders.hold")
            outcomes = sorted(d.rule for d in (h.result() for h in hogs))
        # One of t_a's calls ran to its deadline; the others never got a worker within the wait bound.
        assert outcomes == ["fail-closed:engine-busy", "fail-closed:engine-busy", "fail-closed:timeout"]
    finally:
        engine.close()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGABRT], ids=["killed", "aborted"])
def test_a_worker_dying_mid_evaluation_blocks_and_is_replaced(
    runaway: policies.CompiledPolicy, sig: signal.Signals
) -> None:
    engine = policies.EmbeddedEngine(timeout=30.0, workers=1)
    try:
        zygote, worker = engine.processes()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(policies.evaluate, engine, runaway, SLOW)
            assert eventually(lambda: engine.tenants.in_flight("") == 1, 2.0)
            time.sleep(0.2)  # evaluating now

            os.kill(worker, sig)  # as if rego-cpp aborted
            decision = in_flight.result(timeout=5.0)  # not at the 30 s deadline

        assert_blocked(decision, "engine-error")
        assert "died mid-evaluation" in decision.reasons[0]
        assert eventually(lambda: len(engine.processes()) == 2 and worker not in engine.processes())
        assert engine.processes()[0] == zygote
        assert policies.evaluate(engine, runaway, FAST).decision is policies.Verdict.ALLOW
    finally:
        engine.close()


def test_a_worker_killed_while_idle_costs_no_decision(ship_risk: policies.CompiledPolicy) -> None:
    engine = policies.EmbeddedEngine(timeout=2.0, workers=1)
    try:
        _, worker = engine.processes()
        os.kill(worker, signal.SIGKILL)
        assert eventually(lambda: not alive(worker), 2.0)

        decision = policies.evaluate(engine, ship_risk, action_input("orders.hold"))

        assert (decision.decision, decision.rule) == (policies.Verdict.ALLOW, "orders.hold")
    finally:
        engine.close()


def test_close_stops_every_process_even_mid_evaluation(runaway: policies.CompiledPolicy) -> None:
    engine = policies.EmbeddedEngine(timeout=10.0)
    pids = engine.processes()
    assert len(pids) == 1 + engine.pool.size and all(alive(p) for p in pids)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(policies.evaluate, engine, runaway, SLOW)
        assert eventually(lambda: engine.tenants.in_flight("") == 1, 2.0)
        time.sleep(0.1)

        started = time.perf_counter()
        engine.close()

        assert time.perf_counter() - started < 2.0
        assert in_flight.result(timeout=2.0).decision is policies.Verdict.BLOCK
    assert not [p for p in pids if alive(p)]
    assert not _children_of(pids)
    engine.close()  # idempotent
    assert_blocked(policies.evaluate(engine, runaway, FAST), "engine-busy")


def test_an_engine_dropped_without_close_stops_its_processes() -> None:
    engine = policies.EmbeddedEngine()
    pids = engine.processes()
    del engine

    assert eventually(lambda: not [p for p in pids if alive(p)], 5.0)


def test_many_threads_and_versions_through_a_small_pool(compile_rego: Compile) -> None:
    engine = policies.EmbeddedEngine(timeout=2.0, workers=2, tenant_max_in_flight=2, bundles_per_worker=3)
    versions = [
        compile_rego(f'package t.v{n}\n\ndecision := {{"decision": "ALLOW",\n'
                     f'\t"rule": concat("-", ["v{n}", input.who])}}\n')
        for n in range(5)  # more versions than a worker keeps: bundles are evicted and sent again
    ]
    try:
        def caller(n: int) -> tuple[str, str]:
            expected = f"v{n % 5}-{n}"
            got = policies.evaluate(engine, versions[n % 5], {"who": str(n)}).rule
            return expected, got

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            pairs = list(pool.map(caller, range(400)))
        assert [got for _, got in pairs] == [expected for expected, _ in pairs]
        assert engine.stats.snapshot()["failures"] == {}
    finally:
        engine.close()


def _children_of(pids: list[int]) -> list[int]:
    """Processes whose parent is one of `pids` (a worker the zygote left behind would show here)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as stat:
                ppid = int(stat.read().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid in pids:
            found.append(int(entry))
    return found


def test_waiting_for_a_slot_is_not_part_of_the_budget(runaway: policies.CompiledPolicy) -> None:
    # One tenant, one slot, decisions arriving at once: the last waits far longer than the budget
    # for its turn, yet each evaluation fits the budget. A busy machine queues, it does not refuse.
    engine = policies.EmbeddedEngine(timeout=0.5, workers=2, tenant_max_in_flight=1, queue_timeout=30.0)
    try:
        doc = with_tenant("t_busy", {"n": 60})
        first = policies.evaluate(engine, runaway, doc, timeout=CALM)
        assert first.decision is policies.Verdict.ALLOW, first
        each = max(first.duration_us / 1e6, 0.005)
        count = min(40, int(3 * 0.5 / each) + 2)  # together, several budgets long
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            decisions = list(pool.map(lambda _: policies.evaluate(engine, runaway, doc, timeout=0.5),
                                      range(count)))
        assert [d.rule for d in decisions if d.decision is not policies.Verdict.ALLOW] == []
    finally:
        engine.close()


def test_a_policy_that_reaches_the_environment_finds_none_of_the_servers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lint refuses opa.runtime(); should a spelling slip past it, the workers have nothing to give."""
    monkeypatch.setenv("FIBRIC_TEST_CANARY", "canary-4f1d")  # seen if this test starts the forkserver
    source = ("package t.env\n\nimport rego.v1\n\n"
              'decision := {"decision": "ALLOW", "rule": "env",\n'
              '\t"reasons": [json.marshal(opa.runtime().env)]}\n')
    with pytest.raises(errors.SpecInvalid, match=r"'opa\.runtime' returns the server's environment"):
        policies.compile(source, name="env.rego")
    query = "data.t.env.decision"
    slipped = policies.CompiledPolicy(  # compiled past the lint, as a gap in it would
        source=source, sha256=policies.source_sha256(source), package="t.env", query=query,
        bundle=rego.compile_bundle([("env.rego", source)], query))
    engine = policies.EmbeddedEngine(timeout=CALM, workers=1)
    try:
        decision = policies.evaluate(engine, slipped, FAST, timeout=CALM)
    finally:
        engine.close()

    assert decision.decision is policies.Verdict.ALLOW, decision
    assert decision.reasons == ("{}",)  # not PATH, not HOME, not the canary
