"""Decisions per second and µs per decision for the example policy, on both engines.

Every decision goes through `policies.evaluate()` (the fail-closed path the
executor uses) with a full input document (examples/policies/inputs/notify.json).
Measured in the same run, because these machines are shared and noisy:

- embedded, one caller; embedded, N concurrent callers (one interpreter per
  thread, the engine's design); the same callers sharing ONE interpreter behind
  a lock (the alternative design, for comparison); embedded with engine
  worker threads (hard deadline);
- the OPA protocol path: the OPA engine over HTTP on 127.0.0.1 against the
  test suite's OPA-protocol server (tests/policies/fake_opa.py, evaluating with
  regopy), one caller and N callers, reported as a ratio to embedded.

Run: python bench/bench_policies.py [--decisions 20000] [--threads 4] [--repeat 3]
With --repeat, each scenario runs that many times and the run with the best
p50 is reported (other processes on a shared machine only ever add time).
Target: embedded p50 under 150 µs.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "policies"))
from fake_opa import FakeOpa  # noqa: E402

from fibric import policies  # noqa: E402
from fibric.policies import engine as engine_module  # noqa: E402
from fibric.policies import rego  # noqa: E402

POLICY = ROOT / "examples" / "policies" / "ship_risk.rego"
INPUT = ROOT / "examples" / "policies" / "inputs" / "notify.json"


class LockedSharedEngine:
    """The rejected design: one interpreter for every thread, serialized by a lock."""

    name = "embedded-shared-lock"

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.stats = engine_module.Stats()
        self._session = rego.Session()
        self._lock = threading.Lock()

    def load(self, policy: policies.CompiledPolicy) -> None:
        pass

    def query(
        self, policy: policies.CompiledPolicy, input_doc: Mapping[str, Any], timeout: float
    ) -> policies.Outcome:
        with self._lock:
            return self._session.evaluate(policy.key, policy.bundle, input_doc)

    def close(self) -> None:
        pass


def run(engine: policies.Engine, policy: policies.CompiledPolicy, doc: dict[str, Any],
        decisions: int, threads: int) -> dict[str, float]:
    """Decisions/s over all callers and per-decision latency percentiles, in µs."""
    per_thread = decisions // threads
    for _ in range(200):  # warm up: load the bundle on each thread, open connections
        policies.evaluate(engine, policy, doc)
    barrier = threading.Barrier(threads)

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
    if engine.stats.snapshot()["non_block_after_failure"]:
        raise SystemExit("non-BLOCK decision after a failure")
    return {
        "per_second": len(latencies) / elapsed,
        "p50_us": latencies[len(latencies) // 2],
        "p99_us": latencies[int(len(latencies) * 0.99)],
        "mean_us": statistics.fmean(latencies),
    }


def best(repeat: int, *args: Any) -> dict[str, float]:
    return min((run(*args) for _ in range(repeat)), key=lambda r: r["p50_us"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decisions", type=int, default=20_000, help="embedded decisions per scenario")
    parser.add_argument("--opa-decisions", type=int, default=3_000, help="OPA-path decisions per scenario")
    parser.add_argument("--threads", type=int, default=4, help="concurrent callers")
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario; the best p50 is kept")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args()

    policy = policies.compile(POLICY.read_text(encoding="utf-8"), name=str(POLICY.relative_to(ROOT)))
    doc = json.loads(INPUT.read_text(encoding="utf-8"))
    budget = 1.0  # measure speed, not the fail-closed path
    results: dict[str, dict[str, float]] = {}

    embedded = policies.EmbeddedEngine(timeout=budget)
    results["embedded, 1 caller"] = best(args.repeat, embedded, policy, doc, args.decisions, 1)
    results[f"embedded, {args.threads} callers"] = best(
        args.repeat, embedded, policy, doc, args.decisions, args.threads)
    embedded.close()
    shared = LockedSharedEngine(budget)
    results[f"one interpreter + lock, {args.threads} callers"] = best(
        args.repeat, shared, policy, doc, args.decisions, args.threads)
    workers = policies.EmbeddedEngine(timeout=budget, workers=args.threads)
    results[f"embedded workers={args.threads}, {args.threads} callers"] = best(
        args.repeat, workers, policy, doc, args.decisions, args.threads)
    workers.close()

    server = FakeOpa().start()
    try:
        opa = policies.OpaEngine(server.url, timeout=budget)
        results["OPA protocol (loopback), 1 caller"] = best(
            args.repeat, opa, policy, doc, args.opa_decisions, 1)
        results[f"OPA protocol (loopback), {args.threads} callers"] = best(
            args.repeat, opa, policy, doc, args.opa_decisions, args.threads)
        opa.close()
    finally:
        server.stop()

    if args.json:
        print(json.dumps(results, indent=2))
        return
    base_1 = results["embedded, 1 caller"]
    base_n = results[f"embedded, {args.threads} callers"]
    print(f"{'scenario':<44} {'decisions/s':>12} {'p50 µs':>9} {'p99 µs':>9} {'vs embedded':>12}")
    for name, r in results.items():
        base = base_1 if name.endswith(" 1 caller") else base_n
        ratio = base["per_second"] / r["per_second"]
        print(f"{name:<44} {r['per_second']:>12,.0f} {r['p50_us']:>9.0f} {r['p99_us']:>9.0f} {ratio:>11.1f}x")
    print(f"\nload average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    verdict = "met" if base_1["p50_us"] < 150 else "MISSED"
    print(f"target embedded p50 < 150 µs: {verdict} ({base_1['p50_us']:.0f} µs)")
    print("'vs embedded' = how many times fewer decisions per second than embedded with the same callers")


if __name__ == "__main__":
    main()
