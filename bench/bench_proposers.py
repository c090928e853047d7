"""The rules proposer's cost per event, in µs, against plain Python doing the same work.

The operator is the example ship-risk operator (examples/specs/operators.yaml):
one CEL condition, two actions, keys derived from canonical args. Measured in
the same run, because these machines are shared and noisy:

- baseline-condition: the condition as a plain Python dict comparison;
- baseline-plan: that comparison plus building the same two actions with the
  same derived idempotency keys (what a hand-written proposer would cost);
- rules, one event per run: `RulesProposer.propose_now` on a one-event
  situation (a fresh CEL context per run, as the runs engine calls it);
- rules, N events per run: the per-event cost when events are coalesced;
- rules, non-matching event: condition false, nothing proposed;
- rules, templated args: an args template and an entity_key template per action.

Run: python bench/bench_proposers.py [--events 20000] [--batch 100] [--repeat 3]
Each scenario runs `--repeat` times and the fastest is reported (other
processes only ever add time). Bounded to well under 60 s with the defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fibric import proposers, specs  # noqa: E402
from fibric.specs import models  # noqa: E402

OPERATORS = ROOT / "examples" / "specs" / "operators.yaml"


def event(n: int, scanned: bool = False) -> dict[str, Any]:
    return {
        "id": f"ev_{n}", "type": "order.updated", "entity_key": f"order:SO-{n}", "idempotency_key": f"k{n}",
        "occurred_at": "2026-06-14T09:02:11Z",
        "data": {"order_id": f"SO-{n}", "carrier_scanned": scanned, "status": "open",
                 "ship_by": "2026-06-15"},
    }


def situation(spec: models.OperatorSpec, events: list[dict[str, Any]]) -> proposers.Situation:
    return proposers.Situation(tenant_id="t_bench", operator_id="op_bench", operator_name="ship-risk",
                               spec=spec, events=events, sensed={}, tools=[])


def baseline_condition(ev: dict[str, Any]) -> bool:
    data = ev["data"]
    return data["carrier_scanned"] is False and data["status"] == "open"


def baseline_plan(ev: dict[str, Any]) -> list[proposers.ProposedAction]:
    if not baseline_condition(ev):
        return []
    out = []
    for capability, args in (("orders.hold", {"reason": "will miss ship-by date"}),
                             ("orders.notify", {"to": "owner"})):
        key = proposers.derive_idempotency_key("op_bench", ev["entity_key"], capability, args)
        out.append(proposers.ProposedAction(capability, ev["entity_key"], args, key))
    return out


def per_event_us(work: Callable[[], object], calls: int, events_per_call: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(calls):
            work()
        best = min(best, (time.perf_counter() - started) / (calls * events_per_call) * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per scenario")
    parser.add_argument("--batch", type=int, default=100, help="events per run in the coalesced scenario")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario; the fastest is kept")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args()

    [loaded] = [item for item in specs.load_paths([OPERATORS]) if isinstance(item.document, models.Operator)]
    spec: models.OperatorSpec = loaded.document.spec  # type: ignore[attr-defined]
    templated = spec.model_copy(update={"rules": [models.Rule.model_validate({
        "when": spec.rules[0].when,
        "actions": [
            {"capability": "orders.hold", "entity_key": "order:{{ event.data.order_id }}",
             "args": {"order_id": "{{ event.data.order_id }}",
                      "reason": "ships by {{ event.data.ship_by }}"}},
            {"capability": "orders.notify", "entity_key": "order:{{ event.data.order_id }}",
             "args": {"order_id": "{{ event.data.order_id }}", "to": "owner"}},
        ],
    })]})
    proposer = proposers.RulesProposer()
    one, other = event(1), event(2, scanned=True)
    batch = [event(n) for n in range(args.batch)]
    one_run, no_match_run = situation(spec, [one]), situation(spec, [other])
    batch_run, templated_run = situation(spec, batch), situation(templated, [one])

    # Sanity: the proposer and the baseline agree before anything is timed.
    assert [(a.capability, a.idempotency_key) for a in proposer.propose_now(one_run)] == \
        [(a.capability, a.idempotency_key) for a in baseline_plan(one)]
    assert proposer.propose_now(no_match_run) == [] and len(proposer.propose_now(batch_run)) == 2 * args.batch

    n, repeat = args.events, args.repeat
    results = {
        "baseline_condition_us": per_event_us(lambda: baseline_condition(one), n, 1, repeat),
        "baseline_plan_us": per_event_us(lambda: baseline_plan(one), n, 1, repeat),
        "rules_one_event_per_run_us": per_event_us(lambda: proposer.propose_now(one_run), n, 1, repeat),
        "rules_batched_us": per_event_us(lambda: proposer.propose_now(batch_run), max(1, n // args.batch),
                                         args.batch, repeat),
        "rules_no_match_us": per_event_us(lambda: proposer.propose_now(no_match_run), n, 1, repeat),
        "rules_templated_us": per_event_us(lambda: proposer.propose_now(templated_run), n, 1, repeat),
    }
    if args.json:
        print(json.dumps(results))
        return
    base_condition, base_plan = results["baseline_condition_us"], results["baseline_plan_us"]
    print(f"{'scenario':34} {'µs/event':>9} {'x condition':>12} {'x plan':>8}")
    for name, value in results.items():
        print(f"{name:34} {value:9.2f} {value / base_condition:12.1f} {value / base_plan:8.1f}")
    print(f"events/s, rules one event per run: {1e6 / results['rules_one_event_per_run_us']:,.0f}")


if __name__ == "__main__":
    main()
