"""Fail closed in exactly one place.

`evaluate()` is the only function in Fibric that turns a policy into a trust
decision. Whatever goes wrong on the way (the engine raises, times out, is
unreachable or answers garbage; the query is undefined; the value is not a
well-formed decision) comes out as BLOCK with `rule = "fail-closed:<cause>"`
and the detail in `reasons`. Nothing else in the codebase may decide.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fibric.policies import compiler, decision, failures
from fibric.policies import engine as engine_module

if TYPE_CHECKING:
    from fibric.policies import embedded

log = logging.getLogger(__name__)


def evaluate(
    engine: engine_module.Engine,
    policy: compiler.CompiledPolicy,
    input_doc: Mapping[str, Any],
    *,
    timeout: float | None = None,
) -> decision.Decision:
    """The decision of `policy` on `input_doc`; never raises, BLOCKs on any failure."""
    budget = engine.timeout if timeout is None else timeout
    started = time.perf_counter()
    try:
        if not isinstance(input_doc, Mapping):
            raise failures.InputInvalid(f"the input must be an object, not {type(input_doc).__name__}")
        outcome = engine.query(policy, input_doc, budget)
        elapsed = time.perf_counter() - started - outcome.queued  # the budget is the evaluation's
        if elapsed > budget:
            raise failures.Timeout(f"took {elapsed * 1000:.1f} ms, budget {budget * 1000:.1f} ms")
        if not outcome.defined:
            raise failures.Undefined(f"{policy.query} is undefined for this input")
        verdict, rule, reasons = decision.interpret(outcome.value)
    except failures.PolicyFailure as e:
        return _fail_closed(engine, policy, e.cause, e.detail, started)
    except Exception as e:  # any other exception is an engine bug: still a BLOCK, never a crash
        log.exception("policy engine %s raised while evaluating %s", engine.name, policy.policy_id)
        return _fail_closed(engine, policy, failures.EngineError.cause, f"{type(e).__name__}: {e}", started)
    result = decision.Decision(
        decision=verdict,
        rule=rule,
        reasons=reasons,
        policy_id=policy.policy_id,
        policy_sha256=policy.sha256,
        engine=engine.name,
        duration_us=_micros(started),
    )
    return engine.stats.record(result, failed=False)


def evaluate_many(
    engine: embedded.EmbeddedEngine,
    policy: compiler.CompiledPolicy,
    input_docs: Sequence[Mapping[str, Any]],
    *,
    timeout: float | None = None,
) -> list[decision.Decision]:
    """`evaluate` for many documents at once (replay): one worker, one exchange, a budget per document.

    Each failure is that document's BLOCK; a failure of the whole batch (a timeout, no
    worker) BLOCKs every document with its cause. Not counted in the engine's
    decision stats: these are what-ifs, not decisions.
    """
    if not input_docs:
        return []
    budget = (engine.timeout if timeout is None else timeout) * len(input_docs)
    started = time.perf_counter()
    try:
        outcomes = engine.query_many(policy, input_docs, budget)
    except failures.PolicyFailure as e:
        return [_blocked(engine, policy, e.cause, e.detail, started)] * len(input_docs)
    except Exception as e:  # an engine bug: still BLOCKs, never a crash
        log.exception("policy engine %s raised while replaying %s", engine.name, policy.policy_id)
        return [_blocked(engine, policy, failures.EngineError.cause, f"{type(e).__name__}: {e}",
                         started)] * len(input_docs)
    each = _micros(started) // len(input_docs)
    decided = []
    for outcome in outcomes:
        try:
            if isinstance(outcome, failures.PolicyFailure):
                raise outcome
            if not outcome.defined:
                raise failures.Undefined(f"{policy.query} is undefined for this input")
            verdict, rule, reasons = decision.interpret(outcome.value)
        except failures.PolicyFailure as e:
            decided.append(_blocked(engine, policy, e.cause, e.detail, started))
            continue
        decided.append(decision.Decision(
            decision=verdict, rule=rule, reasons=reasons, policy_id=policy.policy_id,
            policy_sha256=policy.sha256, engine=engine.name, duration_us=each))
    return decided


def _blocked(
    engine: engine_module.Engine, policy: compiler.CompiledPolicy, cause: str, detail: str, started: float
) -> decision.Decision:
    return decision.Decision(
        decision=decision.Verdict.BLOCK, rule=f"fail-closed:{cause}", reasons=(detail,),
        policy_id=policy.policy_id, policy_sha256=policy.sha256, engine=engine.name, failure=cause,
        duration_us=_micros(started))


def unavailable(
    engine: engine_module.Engine, cause: str, detail: str, *, policy_id: str = ""
) -> decision.Decision:
    """BLOCK for an action whose policy cannot even be found or compiled (no evaluation happened)."""
    log.warning("policy %s is unavailable (%s): %s", policy_id or "?", cause, detail)
    blocked = decision.Decision(
        decision=decision.Verdict.BLOCK, rule=f"fail-closed:{cause}", reasons=(detail,),
        policy_id=policy_id, engine=engine.name, failure=cause,
    )
    return engine.stats.record(blocked, failed=True)


def _fail_closed(
    engine: engine_module.Engine, policy: compiler.CompiledPolicy, cause: str, detail: str, started: float
) -> decision.Decision:
    log.warning("policy %s fails closed on %s: %s", policy.policy_id or policy.name, cause, detail)
    blocked = decision.Decision(
        decision=decision.Verdict.BLOCK,
        rule=f"fail-closed:{cause}",
        reasons=(detail,),
        policy_id=policy.policy_id,
        policy_sha256=policy.sha256,
        engine=engine.name,
        failure=cause,
        duration_us=_micros(started),
    )
    return engine.stats.record(blocked, failed=True)


def _micros(started: float) -> int:
    return int((time.perf_counter() - started) * 1_000_000)
