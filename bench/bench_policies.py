"""Decisions per second of the process-isolated embedded engine against in-thread evaluation.

Every decision goes through `policies.evaluate()` (the fail-closed path the
executor uses) with a full input document (examples/policies/inputs/notify.json).
Measured in the same run, because these machines are shared and noisy:

- in-thread: rego-cpp in the caller's thread, one interpreter per thread (the
  engine before worker processes; fastest, but a runaway policy burns its CPU
  in full and cannot be stopped);
- the embedded engine as shipped: worker processes killed at the deadline,
  default pool size and per-tenant cap (the input names one tenant, so it
  gets all workers but one), then with the cap lifted to the pool size (a
  single-tenant installation), each with 1 and with N concurrent callers;
- a constant policy on both, so the difference is the IPC cost alone;
- the OPA protocol path over loopback against the test suite's OPA-protocol
  server (tests/policies/fake_opa.py), for scale.

Run: python bench/bench_policies.py [--decisions 20000] [--threads 8] [--repeat 3]
With --repeat, each scenario runs that many times and the run with the best
p50 is reported (other processes on a shared machine only ever add time).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fibric import policies
from fibric.policies import engine as engine_module
from fibric.policies import inputs, rego

ROOT = Path(__file__).resolve().parent.parent

POLICY = ROOT / "examples" / "policies" / "ship_risk.rego"
INPUT = ROOT / "examples" / "policies" / "inputs" / "notify.json"
CONSTANT = 'package bench.constant\n\ndecision := {"decision": "ALLOW", "rule": "orders.notify"}\n'


class InThreadEngine:
    """The baseline: rego-cpp on the caller's thread, one interpreter per thread, no deadline."""

    name = "in-thread"

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.stats = engine_module.Stats()
        self._local = threading.local()

    def load(self, policy: policies.CompiledPolicy) -> None:
        pass

    def query(
        self, policy: policies.CompiledPolicy, input_doc: Mapping[str, Any], timeout: float
    ) -> policies.Outcome:
        inputs.check_json(input_doc)
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = rego.Session()
        return session.evaluate(policy.key, policy.bundle, inputs.prune(input_doc, policy.input_paths))

    def close(self) -> None:
        pass


def run(engine: policies.Engine, policy: policies.CompiledPolicy, doc: dict[str, Any],
        decisions: int, threads: int) -> dict[str, float]:
    """Decisions/s over all callers and per-decision latency percentiles, in µs."""
    per_thread = decisions // threads
    for _ in range(200):  # warm up: bundles loaded on every thread / worker, connections open
        policies.evaluate(engine, policy, doc)
    barrier = threading.Barrier(threads)
    cpu = os.times()

    def caller(_: int) -> list[float]:
        latencies = []
        barrier.wait()
        for _ in range(per_thread):
            start = time.perf_counter_ns()
            decision = policies.evaluate(engine, policy, doc)
            latencies.append((time.perf_counter_ns() - start) / 1000)
            if decision.rule != "orders.notify":
                raise SystemExit(f"{engine.name}: unexpected decision {decision}")
        return latencies

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        latencies = sorted(x for chunk in pool.map(caller, range(threads)) for x in chunk)
    elapsed = time.perf_counter() - started
    used = os.times()
    if engine.stats.snapshot()["non_block_after_failure"]:
        raise SystemExit("non-BLOCK decision after a failure")
    own = (used.user - cpu.user) + (used.system - cpu.system)
    return {
        "per_second": len(latencies) / elapsed,
        "p50_us": latencies[len(latencies) // 2],
        "p99_us": latencies[int(len(latencies) * 0.99)],
        "mean_us": statistics.fmean(latencies),
        "caller_cpu_us": own / len(latencies) * 1e6,  # this process only (callers, encoding, IPC)
    }


def best(repeat: int, *args: Any) -> dict[str, float]:
    return min((run(*args) for _ in range(repeat)), key=lambda r: r["p50_us"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decisions", type=int, default=20_000, help="embedded decisions per scenario")
    parser.add_argument("--opa-decisions", type=int, default=3_000, help="OPA-path decisions per scenario")
    parser.add_argument("--threads", type=int, default=8, help="concurrent callers")
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario; the best p50 is kept")
    parser.add_argument("--no-opa", action="store_true", help="skip the OPA protocol scenarios")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args()

    policy = policies.compile(POLICY.read_text(encoding="utf-8"), name=str(POLICY.relative_to(ROOT)))
    constant = policies.compile(CONSTANT, name="constant.rego")
    doc = json.loads(INPUT.read_text(encoding="utf-8"))
    budget = 1.0  # measure speed, not the fail-closed path
    n, results = args.threads, {}
    pairs: list[tuple[str, str]] = []  # (process scenario, its in-thread baseline)

    def measure(name: str, engine: policies.Engine, chosen: policies.CompiledPolicy, callers: int) -> None:
        results[name] = best(args.repeat, engine, chosen, doc, args.decisions, callers)

    in_thread = InThreadEngine(budget)
    shipped = policies.EmbeddedEngine(timeout=budget)
    size = shipped.pool.size
    uncapped = policies.EmbeddedEngine(timeout=budget, tenant_max_in_flight=size)
    try:
        for callers in (1, n):
            base = f"in-thread, {callers} caller{'s' * (callers > 1)}"
            measure(base, in_thread, policy, callers)
            name = f"processes (defaults: {size} workers, tenant cap {shipped.tenants.cap}), {callers}"
            measure(name, shipped, policy, callers)
            pairs.append((name, base))
            if callers > 1:
                name = f"processes ({size} workers, tenant cap {size}), {callers}"
                measure(name, uncapped, policy, callers)
                pairs.append((name, base))
        base = "in-thread, constant policy, 1 caller"
        measure(base, in_thread, constant, 1)
        name = "processes, constant policy, 1 caller (IPC cost)"
        measure(name, shipped, constant, 1)
        pairs.append((name, base))
    finally:
        shipped.close()
        uncapped.close()

    if not args.no_opa:
        # After fibric: fake_opa imports regopy, which must load after DuckDB (see fibric/policies/rego.py).
        sys.path.insert(0, str(ROOT / "tests" / "policies"))
        from fake_opa import FakeOpa

        server = FakeOpa().start()
        try:
            opa = policies.OpaEngine(server.url, timeout=budget)
            for callers in (1, n):
                name = f"OPA protocol (loopback), {callers}"
                results[name] = best(args.repeat, opa, policy, doc, args.opa_decisions, callers)
                pairs.append((name, f"in-thread, {callers} caller{'s' * (callers > 1)}"))
            opa.close()
        finally:
            server.stop()

    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'scenario':<58} {'decisions/s':>11} {'p50 µs':>7} {'p99 µs':>7} {'caller CPU µs':>13}"
          f" {'vs in-thread':>12}")
    baseline_of = dict(pairs)
    for name, r in results.items():
        baseline = baseline_of.get(name)
        ratio = f"{r['per_second'] / results[baseline]['per_second']:.2f}x" if baseline else "(baseline)"
        print(f"{name:<58} {r['per_second']:>11,.0f} {r['p50_us']:>7.0f} {r['p99_us']:>7.0f}"
              f" {r['caller_cpu_us']:>13.0f} {ratio:>12}")
    ipc = results["processes, constant policy, 1 caller (IPC cost)"]["p50_us"]
    ipc -= results["in-thread, constant policy, 1 caller"]["p50_us"]
    print(f"\nIPC + scheduling per decision (constant policy, p50 difference): {ipc:.0f} µs")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("'vs in-thread' = decisions/s of the scenario / decisions/s in-thread with the same callers")


if __name__ == "__main__":
    main()
