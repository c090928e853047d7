"""Same Rego, same decisions: the embedded engine and the OPA engine over generated inputs.

A seeded generator builds input documents with awkward values (unicode,
quotes, control characters, large and negative numbers, floats, nulls,
nested arrays and objects, missing fields, wrong types) so the two transport
paths (rego-cpp's C input builder; JSON over HTTP into an OPA server) and the
two error paths (rego-cpp error nodes; OPA error bodies) are compared, not
just the happy path.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from policy_support import SHIP_RISK

from fibric import policies

KITCHEN_SINK = """package fibric.kitchen

import rego.v1

default decision := {"decision": "BLOCK", "rule": "default-deny"}

decision := {"decision": "ALLOW", "rule": "read-only"} if {
	input.tool.annotations.readOnlyHint == true
}

decision := {"decision": "ALERT", "rule": "destructive", "reasons": sort(reasons)} if {
	not input.tool.annotations.readOnlyHint
	input.tool.annotations.destructiveHint == true
	startswith(input.action.capability, "orders.")
}

# Overlaps the rules above on purpose: a read-only action on a flooded entity
# is a conflict, which must be an evaluation error on both engines.
decision := {"decision": "BLOCK", "rule": "flood", "reasons": [msg]} if {
	n := input.context.counts.entity.last_hour
	n > 20
	msg := sprintf("%v actions on %v in the last hour", [n, input.action.entity_key])
}

reasons contains sprintf("args.%s = %v", [k, v]) if {
	some k, v in input.action.args
}

reasons contains "no args" if count(object.get(input.action, "args", {})) == 0
"""

CAPABILITIES = ["orders.hold", "orders.notify", "orders.cancel", "orders.read", "tickets.close", ""]
STRINGS = ["", "owner", "ünïcödé 😀", 'quote " and \\ backslash', "tab\there\nnewline", "\u0001\u001f",
           "order:SO-10884", "x" * 300, "{}[]", "input", "data.fibric"]


def scalar(rng: random.Random) -> Any:
    return rng.choice([
        lambda: rng.choice(STRINGS),
        lambda: rng.randint(-(2**63), 2**63 - 1),
        lambda: rng.randint(-5, 30),
        lambda: rng.uniform(-1e6, 1e6),
        lambda: rng.choice([0.1, 1e-300, 1e300, -0.0, 2.5]),
        lambda: rng.choice([True, False, None]),
    ])()


def value(rng: random.Random, depth: int = 0) -> Any:
    if depth > 2 or rng.random() < 0.6:
        return scalar(rng)
    if rng.random() < 0.5:
        return [value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(STRINGS) + str(i): value(rng, depth + 1) for i in range(rng.randint(0, 3))}


def generated_input(rng: random.Random) -> dict[str, Any]:
    hourly = [0, 1, 2, 3, 4, 25, 700, "3", None]
    counts = {scope: {"last_hour": rng.choice(hourly), "last_day": rng.randint(0, 999)}
              for scope in ("entity", "operator", "capability", "entity_capability")}
    hints = ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")
    annotations = {name: rng.choice([True, False, None, "yes"]) for name in hints if rng.random() < 0.8}
    doc: dict[str, Any] = {
        "tenant": {"id": "t_1"},
        "operator": {"id": "op_1", "name": "ship-risk", "labels": {}},
        "action": {
            "capability": rng.choice(CAPABILITIES),
            "entity_key": rng.choice(STRINGS),
            "idempotency_key": f"k-{rng.random()}",
            "args": {rng.choice(STRINGS) + str(i): value(rng) for i in range(rng.randint(0, 3))},
        },
        "event": rng.choice([None, {"type": "order.updated", "data": value(rng)}]),
        "plan_id": rng.choice([None, "pl_7c1a"]),
        "tool": {"connector": "cn_magento", "name": "orders.hold", "annotations": annotations},
        "context": {"now": "2026-06-14T09:02:11Z", "now_ns": 1781427731000000000, "counts": counts},
    }
    for key in rng.sample(list(doc), rng.choice([0, 0, 0, 1, 2])):
        del doc[key]  # missing fields must not decide differently either
    return doc


def fingerprint(decision: policies.Decision) -> tuple[Any, ...]:
    """What must agree; an evaluation error's wording may differ between engines, its cause may not."""
    reasons = decision.reasons if decision.failure is None else ()
    return decision.decision, decision.rule, reasons, decision.failure, decision.policy_sha256


@pytest.mark.parametrize("name", ["ship_risk", "kitchen_sink"])
def test_both_engines_decide_identically(
    embedded: policies.EmbeddedEngine, opa: policies.OpaEngine, name: str
) -> None:
    source = SHIP_RISK.read_text(encoding="utf-8") if name == "ship_risk" else KITCHEN_SINK
    policy = policies.compile(source, name=f"{name}.rego")
    rng = random.Random(f"fibric-{name}")
    seen: set[tuple[Any, ...]] = set()

    for n in range(250):
        doc = generated_input(rng)
        if name == "ship_risk" and n % 3 == 0:
            doc.setdefault("action", {})["capability"] = rng.choice(["orders.hold", "orders.notify"])

        on_embedded = policies.evaluate(embedded, policy, doc)
        on_opa = policies.evaluate(opa, policy, doc)

        assert fingerprint(on_embedded) == fingerprint(on_opa), doc
        seen.add(fingerprint(on_embedded)[:2])

    # The generator reached every branch, including the evaluation error, on both engines.
    expected = {
        "ship_risk": {("ALLOW", "orders.hold"), ("ALERT", "orders.notify"), ("BLOCK", "orders.notify.cap"),
                      ("BLOCK", "default-deny")},
        "kitchen_sink": {("ALLOW", "read-only"), ("ALERT", "destructive"), ("BLOCK", "flood"),
                         ("BLOCK", "default-deny"), ("BLOCK", "fail-closed:eval-error")},
    }[name]
    assert expected <= {(d.value, r) for d, r in seen}
    for engine in (embedded, opa):
        assert engine.stats.snapshot()["non_block_after_failure"] == 0


def test_the_example_decisions_are_the_documented_ones(engine: policies.Engine) -> None:
    policy = policies.compile(SHIP_RISK.read_text(encoding="utf-8"), name="ship_risk.rego")
    notify = {"capability": "orders.notify", "entity_key": "order:SO-10884"}

    def decide(action: dict[str, Any], sent: int | None = None) -> tuple[str, str, tuple[str, ...]]:
        doc: dict[str, Any] = {"action": action}
        if sent is not None:
            doc["context"] = {"counts": {"entity_capability": {"last_hour": sent, "last_day": sent}}}
        d = policies.evaluate(engine, policy, doc)
        return d.decision.value, d.rule, d.reasons

    assert decide({"capability": "orders.hold"}) == ("ALLOW", "orders.hold", ())
    assert decide(notify, sent=2) == ("ALERT", "orders.notify", ())
    assert decide(notify, sent=3) == (
        "BLOCK", "orders.notify.cap", ("3 notifications about order:SO-10884 in the last hour (cap 3)",))
    assert decide(notify) == ("BLOCK", "default-deny", ())
    assert decide({"capability": "orders.cancel"}) == ("BLOCK", "default-deny", ())


def test_strings_reach_the_policy_exactly(engine: policies.Engine) -> None:
    """Quotes, backslashes, control characters, NUL and non-ASCII compare equal to the same literal."""
    policy = policies.compile(
        "package t.strings\n\nimport rego.v1\n\n"
        'default decision := {"decision": "BLOCK", "rule": "no-match", "reasons": [input.s]}\n\n'
        'decision := {"decision": "ALLOW", "rule": "match",\n'
        '\t"reasons": [input.s, sprintf("<%s>", [input.s])]} if {\n'
        '\tinput.s == "a\\"b\\\\c\\nd\\u0000e é 😀 \\t/"\n}\n'
    )
    exact = 'a"b\\c\nd\x00e é 😀 \t/'

    matched = policies.evaluate(engine, policy, {"s": exact})
    truncated = policies.evaluate(engine, policy, {"s": exact[:-1]})
    smuggled = policies.evaluate(engine, policy, {"s": "orders.hold\x00.evil"})

    assert (matched.rule, matched.reasons) == ("match", (exact, f"<{exact}>"))
    assert (truncated.rule, truncated.reasons) == ("no-match", (exact[:-1],))
    assert (smuggled.rule, smuggled.reasons) == ("no-match", ("orders.hold\x00.evil",))
