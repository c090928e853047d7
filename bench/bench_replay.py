"""Replay of recorded decisions (`fibric policy replay`) against live evaluation of the same inputs.

N varied input documents (the example ship-risk policy's capabilities, counts,
plan ages, stale and tool-changed flags) are decided live, one
`policies.evaluate()` call each as the executor makes them, on the embedded
engine, and the decisions are recorded as receipts with their decision
records in a SQLite state store. Then the same policy replays them exactly
as the API route does (fibric/controller/replay.py: the ledger read by
policy, batches of recorded inputs per worker exchange, an engine of its own
with one worker). Measured in the same run, because these machines are
shared and noisy:

- live, 1 caller: one decision at a time (what one execution does);
- live, N callers on the default pool (the executor under load);
- replay end to end (reading the receipts included), and its evaluation alone.

The replay must come out unchanged (a check, not a measurement), and its
decisions/s against live's is the ratio the issue asks for (goal: >= 1).

Run: python bench/bench_replay.py [--decisions 100000] [--threads 4]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from fibric import policies, store
from fibric.controller import replay
from fibric.policies import embedded, masking
from fibric.store import receipt_store

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "examples" / "policies" / "ship_risk.rego"
CAPABILITIES = ("orders.hold", "orders.notify", "orders.cancel")


def documents(count: int, tenant_id: str) -> list[dict[str, Any]]:
    rng = random.Random(21)
    docs = []
    for n in range(count):
        notified = rng.randint(0, 5)
        docs.append(policies.build_input(
            tenant_id=tenant_id, operator={"id": "op_bench", "name": "ship-risk", "labels": {"team": "ops"}},
            capability=rng.choice(CAPABILITIES), entity_key=f"order:SO-{n}", idempotency_key=f"bench:{n}",
            args={"reason": "will miss ship-by date", "to": "owner"},
            event={"id": f"ev_{n}", "type": "order.updated", "data": {"status": "open", "n": n}},
            counts=policies.Counts(entity_capability=policies.Window(notified, notified)),
            plan_age_seconds=rng.randint(0, 1800), entity_changed_since_plan=rng.random() < 0.1,
            tool_changed=rng.random() < 0.02))
    return docs


def live(engine: policies.EmbeddedEngine, policy: policies.CompiledPolicy, docs: list[dict[str, Any]],
         threads: int) -> tuple[list[policies.Decision], float]:
    started = time.perf_counter()
    if threads == 1:
        decided = [policies.evaluate(engine, policy, d) for d in docs]
    else:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            decided = list(pool.map(lambda d: policies.evaluate(engine, policy, d), docs, chunksize=64))
    return decided, time.perf_counter() - started


def record(state: store.StateStore, tenant: store.Tenant, docs: list[dict[str, Any]],
           decided: list[policies.Decision]) -> None:
    """Receipts with decision records, a few thousand per transaction (the setup, not measured)."""
    rows = [receipt_store.prepare(receipt_store.NewReceipt(
        reseller_id=tenant.reseller_id, tenant_id=tenant.id, operator_id="op_bench", operator="ship-risk",
        capability=d["action"]["capability"], entity_key=d["action"]["entity_key"],
        idempotency_key=d["action"]["idempotency_key"], decision=x.decision.value, rule=x.rule,
        policy_id="pol_bench", policy_sha256=x.policy_sha256,
        outcome="refused" if x.decision.value == "BLOCK" else "applied",
        decision_input=masking.record(d, ["/action/args/reason"])))
        for d, x in zip(docs, decided, strict=True)]
    for start in range(0, len(rows), 5000):
        with state.backend.transaction(write=True) as cur:
            for row in rows[start:start + 5000]:
                receipt_store.append(cur, state.sql, row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fibric-bench-replay-") as tmp:
        state = store.open_store(str(Path(tmp) / "data"))
        tenant = state.create_tenant("bench", "rs_fibric")
        policy = policies.compile(POLICY.read_text(), policy_id="pol_bench")
        docs = documents(args.decisions, tenant.id)
        workers = embedded.default_workers()
        engine = policies.EmbeddedEngine(timeout=1.0, workers=workers, tenant_max_in_flight=workers)
        try:
            policies.evaluate(engine, policy, docs[0])  # workers up, bundle loaded
            decided, one = live(engine, policy, docs, 1)
            _, many = live(engine, policy, docs, args.threads)
        finally:
            engine.close()
        record(state, tenant, docs, decided)
        ledger = receipt_store.StoreLedger(state)
        own = policies.EmbeddedEngine(workers=1, timeout=1.0)  # as the route: an engine of its own
        try:
            started = time.perf_counter()
            evaluated = 0
            for start in range(0, len(docs), replay.BATCH):
                evaluated += len(policies.evaluate_many(own, policy, docs[start:start + replay.BATCH]))
            evaluation = time.perf_counter() - started
            started = time.perf_counter()
            report = replay.replay(ledger, own, tenant.id, "pol_bench", policy)
            end_to_end = time.perf_counter() - started
        finally:
            own.close()
            state.close()
    if report.replayed != len(docs) or report.changed:
        raise SystemExit(f"replay differs from live: {report.to_dict()['transitions']}")
    rate = {"live, 1 caller": len(docs) / one, f"live, {args.threads} callers": len(docs) / many,
            "replay, end to end (1 worker)": report.replayed / end_to_end,
            "replay, evaluation alone (1 worker)": evaluated / evaluation}
    print(f"{len(docs):,} recorded decisions, masked: {report.masked:,}; "
          f"decisions: {dict(sorted(report.transitions.items()))}")
    print(f"{'scenario':<40} {'decisions/s':>12} {'vs live, 1 caller':>18}")
    for name, value in rate.items():
        print(f"{name:<40} {value:>12,.0f} {value / rate['live, 1 caller']:>17.2f}x")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
