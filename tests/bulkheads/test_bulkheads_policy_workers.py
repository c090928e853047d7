"""A policy that runs past its budget on every decision never takes the policy workers another tenant needs.

The embedded engine kills a worker at a decision's deadline and forks a
replacement. A tenant's cap (workers - 1 by default) bounds its evaluations
in flight, but a killed worker is out of the pool until its replacement is
up: if the tenant's next decision could start meanwhile, it would take the
last live worker and the other tenants would have none (BLOCK
`fail-closed:engine-busy`, "no policy worker was free") until the runaway
was killed again. The caller whose evaluation was killed therefore keeps
its slot until the replacement is up (fibric/policies/workerpool.py).

The real engine as `fibric serve` opens it, with the circuit breaker off so
tenant A's policy really runs to its budget on every decision, from more
threads than its cap; tenant B decides the example ship-risk policy from 8.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

from noisy_tenant import SLOW_REGO

from fibric import policies, settings

SHIP_RISK = Path(__file__).resolve().parents[2] / "examples" / "policies" / "ship_risk.rego"
SECONDS = 6.0
B_CLIENTS = 8


def decision_input(tenant: str, n: int) -> dict[str, object]:
    return {"tenant": {"id": tenant}, "action": {"capability": "orders.hold", "entity_key": f"order:SO-{n}",
                                                 "idempotency_key": f"{tenant}:{n}", "args": {}}}


def test_a_runaway_policy_never_leaves_another_tenant_without_a_worker() -> None:
    engine = policies.open_configured(settings.PolicySettings(breaker_timeouts=0))
    assert isinstance(engine, policies.EmbeddedEngine)
    slow = policies.compile(SLOW_REGO, name="slow.rego", policy_id="pol_a",
                            query="data.tenant_a.slow.decision")
    ship_risk = policies.compile(SHIP_RISK.read_text(), name="ship_risk.rego", policy_id="pol_b",
                                 query="data.fibric.ship_risk.decision")
    stop = threading.Event()
    b_outcomes: Counter[str] = Counter()
    a_outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def tenant_a() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            decision = policies.evaluate(engine, slow, decision_input("t_a", n))
            with lock:
                a_outcomes[decision.rule] += 1

    def tenant_b(client: int) -> None:
        n = client * 100_000
        ends = time.monotonic() + SECONDS
        while time.monotonic() < ends:
            n += 1
            decision = policies.evaluate(engine, ship_risk, decision_input("t_b", n))
            outcome = decision.rule if decision.decision is not policies.Verdict.BLOCK else (
                f"{decision.rule}: {decision.reasons[0][:40]}")
            with lock:
                b_outcomes[outcome] += 1
            time.sleep(0.01)

    try:
        hogs = [threading.Thread(target=tenant_a) for _ in range(engine.tenants.cap + 1)]
        for thread in hogs:
            thread.start()
        time.sleep(0.5)  # A's runaway is being killed and replaced all along
        clients = [threading.Thread(target=tenant_b, args=(c,)) for c in range(B_CLIENTS)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
    finally:
        stop.set()
        for thread in hogs:
            thread.join(timeout=10)
        killed = engine.pool.counters["killed"]
        engine.close()

    assert killed >= 10 and a_outcomes["fail-closed:timeout"] >= 10, (killed, a_outcomes)  # it did run away
    starved = {k: v for k, v in b_outcomes.items() if "no policy worker was free" in k}
    assert not starved, f"B waited for a worker A's runaway had taken: {dict(b_outcomes)}"
    assert b_outcomes["orders.hold"] > 0.9 * sum(b_outcomes.values()), dict(b_outcomes)
