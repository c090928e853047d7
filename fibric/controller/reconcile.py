"""Reconcile one object: observe the world, write what was observed into its status.

The contract is controller-runtime's. A reconcile is level-based: it ignores
what triggered it, reads the full current state every time and computes the
whole status from it, so running it twice, late, or after a missed event
gives the same answer. It writes only when the status changed, which makes an
idle resync free. It returns a `Result` (optionally asking to be run again
later) or raises; deciding whether and when to retry belongs to the loop alone
(see loop.py).

A Policy's reconcile compiles its Rego (recording `Compiled` and the source's
sha256) and its shadow candidate, if any (`ShadowCompiled`, which never
touches `Ready`) and, with an OPA engine, pushes the versions to OPA.

A kind whose world lives on the controller's event loop (a Connector's MCP
session, an Operator's answer check, which reads the connector runtime) has an
observer there too (observers.py): its step runs first and binds what it
observed to the kind's reconcile, so the loop treats every kind alike.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from fibric import connectors as mcp
from fibric import errors, policies, store, timefmt, trust
from fibric.controller import conditions
from fibric.store import vault, webhook_store

log = logging.getLogger(__name__)

NOT_CONNECTED_MESSAGE = "MCP connection is handled by the connector runtime"
MAX_MESSAGE = 2000  # a condition message, not a log: long compile reports are cut
DELIVERING = "Delivering"  # a webhook's condition: are its deliveries succeeding?
SHADOW_COMPILED = "ShadowCompiled"  # a policy's condition: did its shadow candidate compile?


def connector_defaults() -> dict[str, Any]:
    """What a connector's status says before the connector runtime has observed it."""
    return {"connection": "disconnected", "tools": [], "last_synced_at": None, "last_error": None}


@dataclass(frozen=True)
class Result:
    """What a successful reconcile asks of the loop: nothing, or to run again after a delay."""

    requeue_after: float | None = None


Reconciler = Callable[[store.StateStore, store.StoredObject, datetime], Result]


def reconcile(state: store.StateStore, obj: store.StoredObject, now: datetime) -> Result:
    """Bring `obj`'s status up to date with the current state; raise to be retried."""
    reconciler = RECONCILERS.get(obj.kind)
    if reconciler is None:
        raise errors.PermanentError(f"no reconciler for kind '{obj.kind}'")
    return reconciler(state, obj, now)


# Whether an operator's LLM route asks for its answer strictly, and why (operator_runs.Runner.answer_check).
AnswerCheck = Callable[[store.StoredObject], "tuple[bool, str] | None"]


def reconcile_operator(state: store.StateStore, obj: store.StoredObject, now: datetime, *,
                       answer: tuple[bool, str] | None = None) -> Result:
    """An operator is ready when its policy exists; unmapped capabilities and an answer schema a
    provider cannot take strictly (`answer`, the controller's AnswerCheck) are only warnings."""
    policy = obj.spec.get("policy", "")
    conds = conditions.of(obj.status)
    if _exists(state, obj.tenant_id, "Policy", policy):
        conds = conditions.set_condition(
            conds, conditions.READY, conditions.TRUE, "Reconciled", "", now
        )
        conds = conditions.set_condition(
            conds, conditions.POLICY_RESOLVED, conditions.TRUE, "Resolved",
            f"policy '{policy}' exists", now,
        )
    else:
        message = f"policy '{policy}' does not exist"
        conds = conditions.set_condition(
            conds, conditions.READY, conditions.FALSE, "PolicyNotFound", message, now
        )
        conds = conditions.set_condition(
            conds, conditions.POLICY_RESOLVED, conditions.FALSE, "PolicyNotFound", message, now
        )

    mapped = {
        capability
        for connector in state.list_objects(obj.tenant_id, "Connector")
        for capability in connector.spec.get("capabilities", {})
    }
    # `sense` capabilities are called through connectors too, on scheduled runs.
    wanted = list(dict.fromkeys([*obj.spec.get("capabilities", []), *obj.spec.get("sense", [])]))
    missing = [c for c in wanted if c not in mapped]
    if missing:
        conds = conditions.set_condition(
            conds, conditions.CAPABILITIES_FULFILLED, conditions.FALSE, "UnfulfilledCapabilities",
            f"no connector maps capability {', '.join(repr(c) for c in missing)}", now,
        )
    else:
        conds = conditions.set_condition(
            conds, conditions.CAPABILITIES_FULFILLED, conditions.TRUE, "Fulfilled",
            "every capability is mapped by a connector", now,
        )
    if answer is None:  # not (or no longer) an LLM route that asks strictly: nothing to say
        conds = [c for c in conds if c["type"] != conditions.STRUCTURED_OUTPUT]
    else:
        strict, message = answer
        conds = conditions.set_condition(
            conds, conditions.STRUCTURED_OUTPUT, conditions.TRUE if strict else conditions.FALSE,
            "Strict" if strict else "NotStrict", message[:MAX_MESSAGE], now)
    return _record(state, obj, conds)


def reconcile_connector(
    state: store.StateStore,
    obj: store.StoredObject,
    now: datetime,
    *,
    observed: mcp.ConnectorState | None = None,
) -> Result:
    """Report what the connector runtime observed; without a runtime, a connector is disconnected.

    `observed` is the runtime's snapshot, taken on the event loop right after
    `ensure` (the loop does that step, since the runtime lives there); its
    status document replaces the connector fields and conditions.
    """
    if observed is not None:
        document = {**obj.status, **observed.status(previous=obj.status, now=now)}
        if document != obj.status:
            state.set_status(obj, document)
        return Result()
    reported = {key: obj.status.get(key, default) for key, default in connector_defaults().items()}
    connection = reported["connection"]
    last_error = reported["last_error"]
    if connection in ("connected", "degraded"):
        # Degraded still serves calls; last_error says what is wrong.
        status = conditions.TRUE
        reason = "Connected" if connection == "connected" else "Degraded"
        message = "" if connection == "connected" else str(last_error or "")
    else:
        status, reason, message = conditions.FALSE, "NotConnected", str(last_error or NOT_CONNECTED_MESSAGE)
    conds = conditions.of(obj.status)
    conds = conditions.set_condition(conds, conditions.READY, status, reason, message, now)
    conds = conditions.set_condition(conds, conditions.CONNECTED, status, reason, message, now)
    return _record(state, obj, conds, extra=reported)


def reconcile_policy(state: store.StateStore, obj: store.StoredObject, now: datetime) -> Result:
    """Compile the policy's Rego and record whether it compiled (no engine, no cache)."""
    return _reconcile_policy(state, obj, now, CompileCache(size=0), None)


def policy_reconciler(
    engine: policies.Engine | None = None, cache: CompileCache | None = None
) -> Reconciler:
    """A Policy reconciler that reuses compiled versions and, given an engine, loads them into it."""
    compiled = cache if cache is not None else CompileCache()

    def reconcile_compiled(state: store.StateStore, obj: store.StoredObject, now: datetime) -> Result:
        return _reconcile_policy(state, obj, now, compiled, engine)

    return reconcile_compiled


def reconcilers(
    engine: policies.Engine | None = None, cache: CompileCache | None = None
) -> Mapping[str, Reconciler]:
    """The reconcilers a controller runs: RECONCILERS, with policies compiled once and sent to `engine`."""
    return MappingProxyType({**RECONCILERS, "Policy": policy_reconciler(engine, cache)})


class CompileCache:
    """Compile outcomes by policy content, so a resync does not compile unchanged Rego again.

    Keyed by a hash of the source, query and tests: the same content compiles
    the same, whichever object holds it. Failures are kept too (a broken policy
    stays broken until its spec changes). Reconciles run on worker threads,
    hence the lock.
    """

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, policies.CompiledPolicy | errors.SpecInvalid] = OrderedDict()

    def compile(self, obj: store.StoredObject) -> policies.CompiledPolicy:
        """The stored policy compiled (labelled with its id), or SpecInvalid with the Rego's line."""
        tests = list(obj.spec.get("test_rego") or [])
        return self._compiled(obj, obj.spec.get("rego"), obj.spec.get("query"), tests, shadow=False)

    def compile_shadow(self, obj: store.StoredObject) -> policies.CompiledPolicy | None:
        """The policy's shadow candidate compiled, None when it names none; SpecInvalid like `compile`."""
        shadow = obj.spec.get("shadow")
        if not isinstance(shadow, Mapping):
            return None
        return self._compiled(obj, shadow.get("rego"), shadow.get("query"), [], shadow=True)

    def _compiled(
        self, obj: store.StoredObject, source: object, query: object, tests: list[str], *, shadow: bool
    ) -> policies.CompiledPolicy:
        # A shadow's errors name spec.shadow.rego, so its outcome is cached apart from the same live Rego.
        key = hashlib.sha256(json.dumps([source, query, tests, shadow]).encode("utf-8")).hexdigest()
        with self._lock:
            outcome = self._entries.get(key)
            if outcome is not None:
                self._entries.move_to_end(key)
        if outcome is None:
            outcome = _compile_stored(obj.name, source, query, tests, shadow=shadow)
            if self.size > 0:
                with self._lock:
                    self._entries[key] = outcome
                    while len(self._entries) > self.size:
                        self._entries.popitem(last=False)
        if isinstance(outcome, errors.SpecInvalid):
            raise outcome
        return outcome.with_id(obj.id)


def _compile_stored(
    name: str, source: object, query: object, tests: list[str], *, shadow: bool = False
) -> policies.CompiledPolicy | errors.SpecInvalid:
    field = "spec.shadow.rego" if shadow else "spec.rego"
    if not isinstance(source, str):
        return errors.SpecInvalid(
            errors.SpecProblem("the stored policy has no Rego source", path=field))
    try:
        return policies.compile(
            source,
            query=query if isinstance(query, str) else None,
            name=f"{name}.shadow.rego" if shadow else f"{name}.rego",
            tests=[policies.Module(f"{name}.test_rego[{i}]", t) for i, t in enumerate(tests)],
            field_path=field,
        )
    except errors.SpecInvalid as e:
        return e


def _reconcile_policy(
    state: store.StateStore,
    obj: store.StoredObject,
    now: datetime,
    cache: CompileCache,
    engine: policies.Engine | None,
) -> Result:
    source = obj.spec.get("rego")
    sha256 = policies.source_sha256(source) if isinstance(source, str) else None
    conds = _shadow_condition(conditions.of(obj.status), obj, now, cache, engine)
    try:
        compiled = cache.compile(obj)
    except errors.SpecInvalid as e:
        message = "; ".join(str(p) for p in e.problems)[:MAX_MESSAGE]
        for type in (conditions.COMPILED, conditions.READY):
            conds = conditions.set_condition(conds, type, conditions.FALSE, "CompileError", message, now)
        return _record(state, obj, conds, extra={"sha256": sha256})
    conds = conditions.set_condition(
        conds, conditions.COMPILED, conditions.TRUE, "Compiled", f"query {compiled.query}", now
    )
    ready, reason, message = conditions.TRUE, "Compiled", ""
    if engine is not None:
        try:
            engine.load(compiled)  # TemporaryError (engine unreachable) propagates: the loop retries
        except errors.SpecInvalid as e:
            ready, reason = conditions.FALSE, "EngineRejected"
            message = "; ".join(str(p) for p in e.problems)[:MAX_MESSAGE]
        else:
            reason = "Loaded"
            message = f"loaded into the {engine.name} engine"
    conds = conditions.set_condition(conds, conditions.READY, ready, reason, message, now)
    return _record(state, obj, conds, extra={"sha256": compiled.sha256})


def _shadow_condition(
    conds: list[conditions.Condition], obj: store.StoredObject, now: datetime, cache: CompileCache,
    engine: policies.Engine | None,
) -> list[conditions.Condition]:
    """`ShadowCompiled`: whether the policy's shadow candidate compiled. Only ever a condition of its
    own: a broken shadow leaves the live policy Compiled and Ready (its decisions record the failure)."""
    try:
        shadow = cache.compile_shadow(obj)
    except errors.SpecInvalid as e:
        message = "; ".join(str(p) for p in e.problems)[:MAX_MESSAGE]
        return conditions.set_condition(conds, SHADOW_COMPILED, conditions.FALSE, "CompileError", message,
                                        now)
    if shadow is None:
        return [c for c in conds if c["type"] != SHADOW_COMPILED]
    if engine is not None:
        try:
            engine.load(shadow)  # TemporaryError (engine unreachable) propagates: the loop retries
        except errors.SpecInvalid as e:
            message = "; ".join(str(p) for p in e.problems)[:MAX_MESSAGE]
            return conditions.set_condition(conds, SHADOW_COMPILED, conditions.FALSE, "EngineRejected",
                                            message, now)
    return conditions.set_condition(conds, SHADOW_COMPILED, conditions.TRUE, "Compiled",
                                    f"query {shadow.query}", now)


def reconcile_webhook(state: store.StateStore, obj: store.StoredObject, now: datetime) -> Result:
    """A webhook is ready when enabled (by its spec and by the dispatcher) and it can be signed.

    `Delivering` reports what the dispatcher observed: False while the
    endpoint keeps failing (since when, and the last error).
    """
    endpoint = webhook_store.read_or_none(state, obj.tenant_id, obj.id)
    secret_env = obj.spec.get("secret_env")
    secret_ref = obj.spec.get("secret_ref")
    if not obj.spec.get("enabled", True):
        ready, reason, message = conditions.FALSE, "Disabled", "spec.enabled is false"
    elif endpoint is not None and endpoint.disabled_at is not None:
        ready, reason = conditions.FALSE, "DisabledByDispatcher"
        message = f"{endpoint.disabled_reason}; enable it with POST /v1/webhooks/{obj.id}/enable"
    elif secret_env and obj.origin != trust.Origin.INSTALLATION:
        # Only the installation's own specs may read a server variable (docs/security.md).
        ready, reason = conditions.FALSE, "NotPermitted"
        message = "spec.secret_env reads a server environment variable; use secret_ref (a tenant secret)"
    elif secret_ref and vault.info(state, obj.tenant_id, secret_ref) is None:
        ready, reason = conditions.FALSE, "SecretMissing"
        message = f"tenant secret {secret_ref} (spec.secret_ref) is not set: `fibric secret set {secret_ref}`"
    elif secret_env and not os.environ.get(secret_env):
        # The dispatcher signs with this variable's value; without it no delivery can be signed.
        ready, reason = conditions.FALSE, "SecretMissing"
        message = f"environment variable {secret_env} (spec.secret_env) is not set in the controller"
    else:
        ready, reason, message = conditions.TRUE, "Enabled", ""
    conds = conditions.set_condition(
        conditions.of(obj.status), conditions.READY, ready, reason, message, now
    )
    if endpoint is not None and endpoint.failing_since is not None:
        since = timefmt.rfc3339(endpoint.failing_since)
        message = f"failing since {since}: {endpoint.last_error or ''}"[:MAX_MESSAGE]
        conds = conditions.set_condition(conds, DELIVERING, conditions.FALSE, "Failing", message, now)
    elif endpoint is not None and endpoint.last_success_at is not None:
        conds = conditions.set_condition(conds, DELIVERING, conditions.TRUE, "Succeeding", "", now)
    return _record(state, obj, conds)


RECONCILERS: Mapping[str, Reconciler] = MappingProxyType(
    {
        "Operator": reconcile_operator,
        "Connector": reconcile_connector,
        "Policy": reconcile_policy,
        "Webhook": reconcile_webhook,
    }
)


def _exists(state: store.StateStore, tenant_id: str, kind: str, name: str) -> bool:
    if not name:
        return False
    try:
        state.get_object(tenant_id, kind, name)
    except errors.NotFound:
        return False
    return True


def _record(
    state: store.StateStore,
    obj: store.StoredObject,
    conds: list[conditions.Condition],
    extra: Mapping[str, Any] | None = None,
) -> Result:
    """Write the new status only if it differs, keeping fields other components own."""
    status = {**obj.status, **(extra or {}), "observed_generation": obj.generation, "conditions": conds}
    if status != obj.status:
        state.set_status(obj, status)
    return Result()


MAX_FAILURE = 1000  # a failure's message in a Ready condition


def failure_message(error: BaseException) -> str:
    """What a failed reconcile's Ready condition says."""
    return (str(error) or type(error).__name__)[:MAX_FAILURE]


# The reason a Ready condition gives for a failed reconcile, by the error's class (else ReconcileError).
FAILURE_REASONS: Mapping[type[BaseException], str] = MappingProxyType({trust.NotPermitted: "NotPermitted"})


def failure_reason(error: BaseException) -> str:
    """What a failed reconcile's Ready condition gives as its reason."""
    return FAILURE_REASONS.get(type(error), "ReconcileError")
