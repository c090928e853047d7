"""Tenant B's throughput beside each of tenant A's faults, as a ratio to a quiet run in the same benchmark.

Everything is real and on this machine, as in tests/bulkheads (bulkhead_support.py,
noisy_tenant.py): `fibric serve` as a subprocess with tenants A and B, the
example order system as B's connector (stdio, from the catalog), a DNS server
that never answers, TCP servers that never answer, an MCP server whose calls
hang, the embedded Rego engine. Each case is a fresh server; tenant A declares
its fault(s) and keeps them busy until B's measurement ends:

    quiet  A declares its base specs and sends nothing (the baseline)
    busy   A's background traffic of a-d (4 events/s, its 120 approvals a minute), no fault:
           what A may fairly use; compare the faults with it too
    a      A's webhook host never resolves     b  A's webhook receiver never answers
    c      A's HTTP MCP connectors hang         d  A's policy runs past its budget every decision
    e      A's events at its full rate limit    all  a to e at once

B, with `--clients` clients (8): ingests `--events` events that its operator
runs and proposes nothing for (events/s: the ingest), waits for those runs,
ingests `--plans` at-risk events and waits for the plans (plans/s: routing,
runs, pre-decisions), then approves the plans (actions/s: 2 actions each, the
executor with its policy, MCP calls, receipts). B's work is then checked as
the tests check it (receipts, effects, webhook deliveries), and the server
gets SIGTERM with A's fault in flight (its exit time is shown).

Cases run in turn, `--repeat` times (quiet first in each round); the table
shows the median of each and the ratio to quiet's median. The goal for A's
every fault: B's events/s and actions/s at least 0.8 of quiet's.
Run: python bench/bench_bulkheads.py [--plans 60] [--events 300] [--repeat 1] [--cases quiet,a,b,c,d,e,all]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "bulkheads"))
sys.path.insert(0, str(ROOT / "tests"))

import bulkhead_support  # noqa: E402
from bulkhead_support import Batch, TenantB, b_orders, installation  # noqa: E402
from noisy_tenant import TenantA  # noqa: E402

CASES = {"quiet": "", "busy": "n", "a": "a", "b": "b", "c": "c", "d": "d", "e": "e", "all": "abcde"}
GOAL = 0.8


@dataclass
class Sample:
    events_per_second: float
    plans_per_second: float
    actions_per_second: float
    exit_seconds: float
    problem: str = ""  # what B's check found wrong, if anything


@dataclass
class Results:
    samples: dict[str, list[Sample]] = field(default_factory=dict)

    def median(self, case: str, metric: str) -> float:
        return statistics.median(getattr(s, metric) for s in self.samples[case])


def measure(case: str, plans: int, events: int, clients: int) -> Sample:
    faults = CASES[case]
    with tempfile.TemporaryDirectory(prefix=f"bench-bulkheads-{case}-") as tmp, \
            installation(Path(tmp), b_orders("SO-B", plans)) as setup:
        a = TenantA(setup, list(faults))
        a.declare()
        try:
            if faults:
                a.start()
                a.wait_in_flight()
            b = TenantB(setup, clients=clients)
            quiet_events = Batch(b_orders("SO-E", events))
            b.ingest(quiet_events, at_risk=False)
            wait_drained(setup)
            batch = Batch(b_orders("SO-B", plans))
            b.ingest(batch)
            b.wait_proposed(batch)
            b.approve(batch)
            problem = ""
            try:
                b.check(batch)
            except AssertionError as e:
                problem = str(e).splitlines()[0][:300]
            if faults:  # SIGTERM with A's faults in flight, as far as they are within 15 s
                a.wait_in_flight(15.0, strict=False)
            code, exited = setup.terminate()
            if code != 0:
                problem = problem or f"exit code {code}"
        finally:
            a.stop()
    return Sample(quiet_events.events_per_second, plans / (batch.ingest_seconds + batch.propose_seconds),
                  batch.actions_per_second, exited, problem)


def wait_drained(setup: bulkhead_support.Installation, timeout: float = 120.0) -> None:
    """Until B's events have all been run (so the next phase does not queue behind them)."""
    deadline = time.monotonic() + timeout
    while setup.backlog(setup.tenant_b):
        if time.monotonic() > deadline:
            raise TimeoutError(f"B's events were not all run within {timeout:g}s")
        time.sleep(0.05)


def report(results: Results, cases: list[str]) -> None:
    """The medians, their ratios to quiet (and to busy, when it ran), and the verdict on the goal."""
    metrics = ("events_per_second", "actions_per_second")
    bases: dict[str, dict[str, float]] = {
        b: {m: results.median(b, m) for m in metrics} for b in ("quiet", "busy") if b in results.samples}
    print(f"\n{'case':<6} {'events/s':>9} {'÷quiet':>7} {'÷busy':>6} {'plans/s':>8} {'actions/s':>10} "
          f"{'÷quiet':>7} {'÷busy':>6} {'SIGTERM s':>10}  B's work")
    worst = None
    for case in cases:
        samples = results.samples[case]
        values = {m: results.median(case, m) for m in metrics}
        ratios: dict[tuple[str, str], float] = {
            (b, m): values[m] / bases[b][m] for b in bases for m in metrics if case != b}
        if "quiet" in bases and case not in ("quiet", "busy"):
            lowest = min(ratios[("quiet", m)] for m in metrics)
            worst = lowest if worst is None else min(worst, lowest)

        def shown(base: str, metric: str, ratios: dict[tuple[str, str], float] = ratios) -> str:
            return f"{ratios[(base, metric)]:.2f}" if (base, metric) in ratios else ""

        problems = [s.problem for s in samples if s.problem]
        status = "correct" if not problems else f"WRONG in {len(problems)} of {len(samples)}: {problems[0]}"
        print(f"{case:<6} {values['events_per_second']:>9.1f} {shown('quiet', 'events_per_second'):>7} "
              f"{shown('busy', 'events_per_second'):>6} {results.median(case, 'plans_per_second'):>8.1f} "
              f"{values['actions_per_second']:>10.1f} {shown('quiet', 'actions_per_second'):>7} "
              f"{shown('busy', 'actions_per_second'):>6} {max(x.exit_seconds for x in samples):>10.1f}  "
              f"{status}")
    if worst is not None:
        verdict = "met" if worst >= GOAL else "NOT met"
        print(f"\nworst ratio to quiet over A's faults {worst:.2f}: "
              f"goal (>= {GOAL} for every fault) {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=60, help="plans B approves per case (2 actions each)")
    parser.add_argument("--events", type=int, default=300, help="events B ingests per case for events/s")
    parser.add_argument("--clients", type=int, default=8, help="B's concurrent clients")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every case; medians are shown")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated, from: " + ", ".join(CASES))
    options = parser.parse_args()
    cases = [c.strip() for c in options.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)}")
    results = Results({c: [] for c in cases})
    for round_number in range(options.repeat):
        for case in cases:
            sample = measure(case, options.plans, options.events, options.clients)
            results.samples[case].append(sample)
            print(f"round {round_number + 1} {case:<5} events/s {sample.events_per_second:7.1f}  "
                  f"plans/s {sample.plans_per_second:6.1f}  actions/s {sample.actions_per_second:6.1f}  "
                  f"SIGTERM {sample.exit_seconds:4.1f}s  {sample.problem or 'correct'}", flush=True)
    report(results, cases)


if __name__ == "__main__":
    main()
