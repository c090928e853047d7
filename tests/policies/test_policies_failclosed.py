"""The fail-closed matrix: every way a decision can go wrong is BLOCK, on both engines.

Each case checks the rule names its cause, the decision still carries the
policy's id and source hash (receipts record both), and the engine's counter
of non-BLOCK decisions after a failure stays 0.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from fake_opa import FakeOpa
from policy_support import action_input

from fibric import policies

Compile = Callable[..., policies.CompiledPolicy]


def assert_fail_closed(
    engine: policies.Engine, policy: policies.CompiledPolicy, decision: policies.Decision, cause: str
) -> None:
    assert decision.decision is policies.Verdict.BLOCK
    assert decision.rule == f"fail-closed:{cause}"
    assert decision.failure == cause
    assert decision.reasons and all(decision.reasons)  # the detail, for the receipt and the operator
    assert decision.policy_id == policy.policy_id
    assert decision.policy_sha256 == policy.sha256
    assert decision.engine == engine.name
    stats = engine.stats.snapshot()
    assert stats["failures"].get(cause, 0) >= 1
    assert stats["non_block_after_failure"] == 0


# (cause, Rego body after the package line, input document)
POLICY_CASES = {
    "undefined-no-rule-matched": (
        "undefined",
        'decision := {"decision": "ALLOW", "rule": "r"} if input.never == true',
        {},
    ),
    "undefined-wrong-query": ("undefined", 'other := {"decision": "ALLOW", "rule": "r"}', {}),
    "string": ("not-an-object", 'decision := "ALLOW"', {}),
    "array": ("not-an-object", 'decision := ["ALLOW", "r"]', {}),
    "boolean": ("not-an-object", "decision := true", {}),
    "null": ("not-an-object", "decision := null", {}),
    "number": ("not-an-object", "decision := 1", {}),
    "set": ("not-an-object", 'decision contains "ALLOW"', {}),
    "lowercase-decision": ("unknown-decision", 'decision := {"decision": "allow", "rule": "r"}', {}),
    "unknown-decision": ("unknown-decision", 'decision := {"decision": "PERMIT", "rule": "r"}', {}),
    "decision-missing": ("unknown-decision", 'decision := {"rule": "r"}', {}),
    "decision-not-string": ("unknown-decision", 'decision := {"decision": true, "rule": "r"}', {}),
    "rule-missing": ("malformed", 'decision := {"decision": "ALLOW"}', {}),
    "rule-empty": ("malformed", 'decision := {"decision": "ALLOW", "rule": ""}', {}),
    "rule-not-string": ("malformed", 'decision := {"decision": "ALLOW", "rule": 7}', {}),
    "reasons-not-list": ("malformed", 'decision := {"decision": "ALLOW", "rule": "r", "reasons": "x"}', {}),
    "reasons-not-strings": (
        "malformed", 'decision := {"decision": "ALLOW", "rule": "r", "reasons": [1]}', {}),
    "conflicting-outputs": (
        "eval-error",
        'decision := {"decision": "ALLOW", "rule": "a"} if input.a\n'
        'decision := {"decision": "BLOCK", "rule": "b"} if input.b',
        {"a": True, "b": True},
    ),
    "builtin-error-is-an-error": (
        "eval-error",
        'decision := {"decision": "ALLOW", "rule": "r", "reasons": [sprintf("%v", [to_number(input.n)])]}',
        {"n": "not a number"},
    ),
    "division-by-zero": (
        "eval-error",
        'decision := {"decision": "ALLOW", "rule": "r", "reasons": [sprintf("%v", [1 / input.z])]}',
        {"z": 0},
    ),
}


@pytest.mark.parametrize("case", list(POLICY_CASES), ids=list(POLICY_CASES))
def test_a_policy_that_does_not_decide_blocks(
    engine: policies.Engine, compile_rego: Compile, case: str
) -> None:
    cause, body, doc = POLICY_CASES[case]
    policy = compile_rego(f"package t.{case.replace('-', '_')}\n\nimport rego.v1\n\n{body}\n")

    decision = policies.evaluate(engine, policy, doc)

    assert_fail_closed(engine, policy, decision, cause)


def test_a_builtin_error_is_not_silently_undefined(engine: policies.Engine, compile_rego: Compile) -> None:
    # Without strict built-in errors this policy would fall through to its default and ALLOW.
    policy = compile_rego(
        "package t.strict\n\nimport rego.v1\n\n"
        'default decision := {"decision": "ALLOW", "rule": "default-allow"}\n'
        'decision := {"decision": "BLOCK", "rule": "too-big"} if to_number(input.amount) > 100\n'
    )

    assert policies.evaluate(engine, policy, {"amount": "100"}).rule == "default-allow"
    decision = policies.evaluate(engine, policy, {"amount": "lots"})

    assert_fail_closed(engine, policy, decision, "eval-error")


BAD_INPUTS: dict[str, Any] = {
    "nan": {"x": math.nan},
    "infinity": {"x": [math.inf]},
    "lone-surrogate": {"action": {"capability": "orders.hold\ud800"}},
    "lone-surrogate-key": {"a\udfffb": 1},
    "integer-key": {"x": {1: "one"}},
    "huge-integer": {"x": 2**70},
    "not-json": {"x": {1, 2}},
    "bytes": {"x": b"raw"},
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_input_that_is_not_exact_json_blocks(
    engine: policies.Engine, ship_risk: policies.CompiledPolicy, case: str
) -> None:
    decision = policies.evaluate(engine, ship_risk, BAD_INPUTS[case])

    assert_fail_closed(engine, ship_risk, decision, "input-invalid")


def test_an_input_that_is_not_an_object_blocks(
    engine: policies.Engine, ship_risk: policies.CompiledPolicy
) -> None:
    decision = policies.evaluate(engine, ship_risk, ["orders.hold"])  # type: ignore[arg-type]

    assert_fail_closed(engine, ship_risk, decision, "input-invalid")


SLOW = (
    "package t.slow\n\nimport rego.v1\n\n"
    'decision := {"decision": "ALLOW",\n'
    '\t"rule": sprintf("%d", [count([x | some x in numbers.range(1, input.n)])])}\n'
)


def test_an_evaluation_over_its_budget_blocks(engine: policies.Engine, compile_rego: Compile) -> None:
    policy = compile_rego(SLOW)
    assert policies.evaluate(engine, policy, {"n": 10}).decision is policies.Verdict.ALLOW

    decision = policies.evaluate(engine, policy, {"n": 100_000}, timeout=0.02)

    assert_fail_closed(engine, policy, decision, "timeout")


def test_the_default_budget_is_100_ms() -> None:
    assert policies.EmbeddedEngine().timeout == 0.1
    assert policies.OpaEngine("http://127.0.0.1:8181").timeout == 0.1
    assert policies.open_engine().timeout == 0.1


def test_embedded_workers_return_at_the_deadline(compile_rego: Compile) -> None:
    engine = policies.EmbeddedEngine(timeout=0.05, workers=2)
    try:
        policy = compile_rego(SLOW)
        started = time.perf_counter()

        decision = policies.evaluate(engine, policy, {"n": 400_000})

        assert time.perf_counter() - started < 0.5  # the evaluation itself takes about a second
        assert_fail_closed(engine, policy, decision, "timeout")
        assert policies.evaluate(engine, policy, {"n": 10}, timeout=5).decision is policies.Verdict.ALLOW
    finally:
        engine.close()


def test_an_embedded_engine_failure_blocks(
    embedded: policies.EmbeddedEngine, ship_risk: policies.CompiledPolicy
) -> None:
    corrupt = dataclasses.replace(ship_risk, bundle=b"not a bundle")

    decision = policies.evaluate(embedded, corrupt, action_input("orders.hold"))

    assert_fail_closed(embedded, corrupt, decision, "engine-error")


# --- the OPA server failing ----------------------------------------------------------


def test_opa_unreachable_blocks(
    opa: policies.OpaEngine, fake_opa: FakeOpa, ship_risk: policies.CompiledPolicy
) -> None:
    opa.load(ship_risk)
    fake_opa.stop()

    decision = policies.evaluate(opa, ship_risk, action_input("orders.hold"))

    assert_fail_closed(opa, ship_risk, decision, "engine-unreachable")
    assert "refused" in decision.reasons[0].lower()


def test_opa_never_started_blocks(ship_risk: policies.CompiledPolicy, fake_opa: FakeOpa) -> None:
    url = fake_opa.url
    fake_opa.stop()
    engine = policies.OpaEngine(url, timeout=1.0)

    decision = policies.evaluate(engine, ship_risk, action_input("orders.hold"))

    assert_fail_closed(engine, ship_risk, decision, "engine-unreachable")


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, None),  # OPA's own internal_error body, not an evaluation error
        (503, b"<html>Service Unavailable</html>"),  # a proxy in front of OPA
        (502, b""),
        (404, b'{"code": "resource_not_found", "message": "nope"}'),
        (401, b'{"code": "unauthorized", "message": "missing token"}'),
    ],
)
def test_opa_error_status_blocks(
    opa: policies.OpaEngine, fake_opa: FakeOpa, ship_risk: policies.CompiledPolicy,
    status: int, body: bytes | None,
) -> None:
    opa.load(ship_risk)
    fake_opa.fail_status, fake_opa.fail_body = status, body

    decision = policies.evaluate(opa, ship_risk, action_input("orders.hold"))

    assert_fail_closed(opa, ship_risk, decision, "engine-error")
    assert str(status) in decision.reasons[0]


@pytest.mark.parametrize(
    "garbage",
    [b"<html>hello</html>", b'{"result": ', b"[1, 2]", b'"ALLOW"', b""],
    ids=["html", "truncated-json", "array", "string", "empty"],
)
def test_opa_garbage_blocks(
    opa: policies.OpaEngine, fake_opa: FakeOpa, ship_risk: policies.CompiledPolicy, garbage: bytes
) -> None:
    opa.load(ship_risk)
    fake_opa.garbage = garbage

    decision = policies.evaluate(opa, ship_risk, action_input("orders.hold"))

    assert_fail_closed(opa, ship_risk, decision, "bad-response")


def test_opa_slower_than_the_budget_blocks(
    fake_opa: FakeOpa, ship_risk: policies.CompiledPolicy
) -> None:
    engine = policies.OpaEngine(fake_opa.url, timeout=0.05)
    engine.load(ship_risk)
    fake_opa.delay = 0.3
    started = time.perf_counter()

    decision = policies.evaluate(engine, ship_risk, action_input("orders.hold"))

    assert time.perf_counter() - started < 0.25  # the engine gave up at the budget
    assert_fail_closed(engine, ship_risk, decision, "timeout")


def test_a_failing_first_push_blocks(
    opa: policies.OpaEngine, fake_opa: FakeOpa, ship_risk: policies.CompiledPolicy
) -> None:
    fake_opa.fail_status = 500  # the lazy push on first use fails: no decision without the policy

    decision = policies.evaluate(opa, ship_risk, action_input("orders.hold"))

    assert_fail_closed(opa, ship_risk, decision, "engine-error")


# --- the one place ------------------------------------------------------------------


class RaisingEngine:
    """An engine (our own boundary) whose query raises whatever it is given."""

    name = "raising"
    timeout = 1.0

    def __init__(self, error: BaseException | None = None, outcome: policies.Outcome | None = None) -> None:
        self.stats = policies.Stats()
        self._error = error
        self._outcome = outcome

    def load(self, policy: policies.CompiledPolicy) -> None:
        pass

    def query(
        self, policy: policies.CompiledPolicy, input_doc: Mapping[str, Any], timeout: float
    ) -> policies.Outcome:
        if self._error is not None:
            raise self._error
        assert self._outcome is not None
        return self._outcome

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "error", [RuntimeError("boom"), KeyError("x"), MemoryError(), OSError(5, "io"), ValueError("bad")],
    ids=lambda e: type(e).__name__,
)
def test_any_exception_from_an_engine_blocks(ship_risk: policies.CompiledPolicy, error: Exception) -> None:
    engine = RaisingEngine(error)

    decision = policies.evaluate(engine, ship_risk, action_input("orders.hold"))

    assert_fail_closed(engine, ship_risk, decision, "engine-error")


def test_a_slow_engine_that_answers_allow_is_still_blocked(ship_risk: policies.CompiledPolicy) -> None:
    class SlowAllow(RaisingEngine):
        def query(self, *args: Any) -> policies.Outcome:
            time.sleep(0.05)
            return policies.Outcome(True, {"decision": "ALLOW", "rule": "r"})

    engine = SlowAllow()

    decision = policies.evaluate(engine, ship_risk, {}, timeout=0.01)

    assert_fail_closed(engine, ship_risk, decision, "timeout")


def test_the_counter_catches_a_non_block_after_a_failure() -> None:
    """The tripwire itself: an ALLOW after a failure, from any code path, is counted and BLOCKed."""
    stats = policies.Stats()
    wrong = policies.Decision(policies.Verdict.ALLOW, "fail-closed:timeout", failure="timeout")

    recorded = stats.record(wrong, failed=True)

    assert recorded.decision is policies.Verdict.BLOCK
    assert stats.snapshot()["non_block_after_failure"] == 1


def test_a_decision_after_failures_is_unaffected(
    engine: policies.Engine, ship_risk: policies.CompiledPolicy
) -> None:
    policies.evaluate(engine, ship_risk, {"x": math.nan})

    decision = policies.evaluate(engine, ship_risk, action_input("orders.hold"))

    assert (decision.decision, decision.rule) == (policies.Verdict.ALLOW, "orders.hold")
    assert decision.failure is None
    assert engine.stats.snapshot() == {
        "decisions": 2, "verdicts": {"BLOCK": 1, "ALLOW": 1}, "failures": {"input-invalid": 1},
        "non_block_after_failure": 0,
    }
