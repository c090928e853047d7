"""Decide one action against its operator's bound policy: the plan's preview and the executor's verdict.

Plan pre-evaluation (the `decision` each proposed action shows) and the
executor ask the same question with the same input document, so they share
this. The policy is looked up by the operator's `spec.policy` name in the
same tenant and compiled through the controller's CompileCache (once per
version). A policy that is missing or does not compile is BLOCK with a
`fail-closed:` rule, never an exception: callers always get a Decision.
The executor keeps the decision record (the input, masked by the Policy's
`mask`, and the query) on the receipt, for `fibric policy replay`; a plan
preview keeps it on each proposed action.

A Policy may name a shadow candidate (`spec.shadow`): on the executor's
decisions it is evaluated after the live policy, on the same unmasked
input, and only recorded (`policy.shadow` on the receipt). It never
decides: its failures are recorded, not raised. Plan previews skip it
(`shadow=False`): a preview is not a decision of record, so the candidate
costs nothing there. A Policy without a shadow costs nothing extra either.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fibric import errors, policies, store
from fibric.controller import reconcile
from fibric.policies import masking

log = logging.getLogger(__name__)
MAX_REASON = 500  # a shadow's failure detail on a receipt, not a compile report


class Decider:
    """Fail-closed decisions for a tenant's operators, over one engine and one compile cache."""

    def __init__(
        self, state: store.StateStore, engine: policies.Engine, cache: reconcile.CompileCache | None = None
    ) -> None:
        self.state = state
        self.engine = engine
        self.cache = cache or reconcile.CompileCache()

    def decide(
        self, tenant_id: str, operator: store.StoredObject, input_doc: Mapping[str, Any]
    ) -> policies.Decision:
        """The policy's decision on `input_doc` (policies.build_input); never raises. Blocking."""
        return self.decide_recorded(tenant_id, operator, input_doc, shadow=False).decision

    def decide_recorded(
        self, tenant_id: str, operator: store.StoredObject, input_doc: Mapping[str, Any], *,
        shadow: bool = True,
    ) -> Decided:
        """`decide`, with the id of the Policy the operator is bound to (None when there is none), the
        decision record a receipt or a plan preview keeps (the input, masked; the query) and, with
        `shadow`, what the Policy's shadow candidate would have decided (Decided.shadow)."""
        name = str(operator.spec.get("policy"))
        try:
            obj = self.state.get_object(tenant_id, "Policy", name)
        except errors.NotFound:
            return Decided(policies.unavailable(
                self.engine, "policy-missing",
                f"operator {operator.name} is bound to policy '{name}', which does not exist"), None)
        try:
            policy = self.cache.compile(obj)
        except errors.SpecInvalid as e:
            return Decided(policies.unavailable(self.engine, "policy-invalid",
                                                f"policy '{name}' does not compile: {e}"), obj.id)
        decision = policies.evaluate(self.engine, policy, input_doc)  # the real values, never the masked
        record = masking.record(input_doc, obj.spec.get("mask") or ())
        # After the live decision, which is final: nothing the shadow does can reach it.
        candidate = self.shadow(obj, input_doc) if shadow and obj.spec.get("shadow") else None
        return Decided(decision, obj.id, query=policy.query, record=record, shadow=candidate)

    def shadow(self, obj: store.StoredObject, input_doc: Mapping[str, Any]) -> dict[str, Any] | None:
        """What the Policy's shadow candidate decides on `input_doc`, as the receipt's `policy.shadow`.

        The same fail-closed path as the live policy (policies.evaluate): a candidate that does
        not compile, errors or times out comes out as a fail-closed BLOCK with its `failure`.
        None when the Policy names no shadow.
        """
        try:
            candidate = self.cache.compile_shadow(obj)
        except errors.SpecInvalid as e:
            return _unevaluated(obj, "shadow-invalid",
                                f"the shadow of policy '{obj.name}' does not compile: {e}")
        except Exception as e:  # the compile worker failed: recorded, never the live decision's concern
            log.exception("the shadow of policy %s could not be compiled", obj.id)
            return _unevaluated(obj, "engine-error", f"{type(e).__name__}: {e}")
        if candidate is None:
            return None
        would = policies.evaluate(self.engine, candidate, input_doc)
        answer: dict[str, Any] = {"decision": would.decision.value, "rule": would.rule,
                                  "policy_sha256": would.policy_sha256, "query": candidate.query}
        if would.failure is not None:
            answer["failure"] = would.failure
            answer["reasons"] = [r[:MAX_REASON] for r in would.reasons]
        return answer


def _unevaluated(obj: store.StoredObject, cause: str, detail: str) -> dict[str, Any]:
    """`policy.shadow` for a candidate that was not evaluated: a fail-closed BLOCK, like a live one."""
    shadow = obj.spec.get("shadow")
    source = shadow.get("rego") if isinstance(shadow, Mapping) else None
    return {"decision": policies.Verdict.BLOCK.value, "rule": f"fail-closed:{cause}",
            "policy_sha256": policies.source_sha256(source) if isinstance(source, str) else None,
            "failure": cause, "reasons": [detail[:MAX_REASON]]}


@dataclass(frozen=True)
class Decided:
    """A decision with what identifies it for replay: the policy, its query and the input it saw."""

    decision: policies.Decision
    policy_id: str | None
    # With the decision's policy_sha256, the query names the exact compiled version (source + query).
    query: str | None = None
    record: dict[str, Any] | None = None  # the input document, masked; None when no policy ran
    # What the Policy's shadow candidate would have decided (the receipt's policy.shadow); None: no shadow.
    shadow: dict[str, Any] | None = None
