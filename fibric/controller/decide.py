"""Decide one action against its operator's bound policy: the plan's preview and the executor's verdict.

Plan pre-evaluation (the `decision` each proposed action shows) and the
executor ask the same question with the same input document, so they share
this. The policy is looked up by the operator's `spec.policy` name in the
same tenant and compiled through the controller's CompileCache (once per
version). A policy that is missing or does not compile is BLOCK with a
`fail-closed:` rule, never an exception: callers always get a Decision.
The executor also keeps the decision record (the input, masked by the
Policy's `mask`, and the query) on the receipt, for `fibric policy replay`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fibric import errors, policies, store
from fibric.controller import reconcile
from fibric.policies import masking


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
        return self.decide_bound(tenant_id, operator, input_doc)[0]

    def decide_bound(
        self, tenant_id: str, operator: store.StoredObject, input_doc: Mapping[str, Any]
    ) -> tuple[policies.Decision, str | None]:
        """`decide`, with the id of the Policy the operator is bound to (None when there is none),
        so callers that record it read the policy once."""
        decided = self.decide_recorded(tenant_id, operator, input_doc)
        return decided.decision, decided.policy_id

    def decide_recorded(
        self, tenant_id: str, operator: store.StoredObject, input_doc: Mapping[str, Any]
    ) -> Decided:
        """`decide_bound`, with the decision record a receipt keeps (the input, masked; the query)."""
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
        return Decided(decision, obj.id, query=policy.query, record=record)


@dataclass(frozen=True)
class Decided:
    """A decision with what identifies it for replay: the policy, its query and the input it saw."""

    decision: policies.Decision
    policy_id: str | None
    # With the decision's policy_sha256, the query names the exact compiled version (source + query).
    query: str | None = None
    record: dict[str, Any] | None = None  # the input document, masked; None when no policy ran
