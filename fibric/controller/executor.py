"""The executor: "the model proposes, the executor disposes", each action exactly once.

`execute(plan)` runs behind POST /v1/plans/{id}/approve, on the plan that
request just moved to `approved`. In order (DESIGN.md, Executor):

1. record the execution (which actions were approved), so a crash cannot
   lose the approval, and take the single-flight lease of every entity the
   plan touches; a live lease elsewhere is 409 conflict naming the entity,
   and the plan goes back to `proposed` untouched;
2. per action: a receipt that already applied its idempotency key makes it
   DEDUP; otherwise the policy decides (fail-closed, fibric/controller/disposal.py);
3. BLOCK writes a `refused` receipt; ALLOW and ALERT first write a durable
   intent (no intent, no call), then call the tool with the idempotency key,
   then write the receipt (`applied`, `failed`, or `in_doubt` when the
   connector cannot say whether the server acted);
4. each intent is completed in the same state-store transaction that
   enqueues its `receipt.created` and `action.disposed` webhook events;
   the plan's results are recorded and `plan.executed` is enqueued with the
   execution's end.

Everything blocking (state store, DuckDB, Rego) runs on the executor's pool; the
tool call runs on the event loop, through the controller's connector runtime.
Recovery after a crash (fibric/controller/recovery.py) re-enters through
`resume`, which walks the same steps and skips what the receipts show done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from fibric import errors, store, threads, tracing
from fibric import metrics as metrics_module
from fibric.connectors import connector_errors, tools
from fibric.connectors import runtime as runtime_module
from fibric.controller import crashpoints, decide, disposal
from fibric.store import intents, leases, plan_store, receipt_store, views

log = logging.getLogger(__name__)
disposals = logging.getLogger("fibric.disposal")  # one line per action disposed of (docs/operations.md#logs)

# How long recovery waits for a connector to come back before failing closed on an action.
RECOVERY_PATIENCE = timedelta(minutes=10)
REQUEST_SENT_YIELDS = 20  # loop turns that let a started call write its request before the crashpoint
IN_DOUBT_RULE = "in-doubt"
DECLINED_RULE = "declined"


class Executor:
    """Disposes of approved plans (fibric.api.context.Executor); one per process, shared by requests."""

    def __init__(
        self,
        state: store.StateStore,
        ledger: receipt_store.Ledger,
        runtime: runtime_module.ConnectorRuntime,
        decider: decide.Decider,
        *,
        lease_seconds: float = 30.0,
        crash: crashpoints.Crashpoints | None = None,
        pool: threads.Pool | None = None,
        on_receipt: Callable[[], None] | None = None,
        metrics: metrics_module.Metrics | None = None,
    ) -> None:
        """`ledger` reads the receipts of record (DEDUP, counts, a resumed plan's receipts); `pool`
        runs the blocking store and policy work (the system's executor pool); `on_receipt` is
        called after receipts are committed (the sealer's wake); `metrics` counts decisions."""
        self.metrics = metrics or metrics_module.Metrics()
        self.state = state
        self.ledger = ledger
        self.on_receipt = on_receipt or (lambda: None)
        self.runtime = runtime
        self.decider = decider
        self.lease_seconds = lease_seconds
        self.crash = crash or crashpoints.Crashpoints({})
        self.pool = pool or threads.standalone("executor")

    # --- entry points ---------------------------------------------------------------

    async def execute(self, plan: plan_store.Plan, *, only_actions: Sequence[str] | None) -> plan_store.Plan:
        """Dispose of a just-approved plan; returns it with its results. Conflict on a lease collision."""
        holder = new_holder()
        selected = select(plan, only_actions)
        entities = entities_of(selected)
        claim, known, operator = await self.pool.run(self._begin, plan, selected, entities, only_actions,
                                                     holder)
        self.crash.hit("after_lease")
        return await self.run(plan, selected, entities, claim, known, operator)

    def _begin(
        self, plan: plan_store.Plan, selected: Sequence[dict[str, Any]], entities: Sequence[str],
        only_actions: Sequence[str] | None, holder: str,
    ) -> tuple[intents.Execution, dict[str, intents.Intent], str]:
        """Claim the execution, lease its entities, check nothing is in doubt (blocking: one hop).

        On a Conflict, the claim and the leases taken are given back. Returns what
        `run` needs: the claimed execution, the plan's intents and its operator's name.
        """
        claim = intents.begin_execution(self.state, plan.tenant_id, plan.id, only_actions=only_actions,
                                        holder=holder, ttl=self.lease_seconds)
        try:
            self._take_leases(plan, entities, holder)
            self._check_nothing_in_doubt(plan, selected, entities, holder)
        except errors.Conflict:
            intents.abandon_execution(self.state, plan.tenant_id, plan.id, holder)
            raise
        return (claim, *self._intents_and_operator(plan))

    async def resume(self, execution: intents.Execution) -> plan_store.Plan | None:
        """Finish an execution whose holder died (recovery has claimed it for `execution.holder`).

        None when an entity is still leased by a live holder: the claim
        lapses and the next recovery pass tries again.
        """
        plan = await self.pool.run(plan_store.get, self.state, execution.tenant_id, execution.plan_id)
        if plan.status != "approved":  # results were recorded; only the execution's end is missing
            await self._finish_execution(plan)
            return plan
        selected = select(plan, execution.only_actions)
        entities = entities_of(selected)
        try:
            await self.pool.run(self._take_leases, plan, entities, execution.holder)
        except errors.Conflict as e:
            log.info("recovery of plan %s waits: %s", plan.id, e)
            return None
        known, operator = await self.pool.run(self._intents_and_operator, plan)
        return await self.run(plan, selected, entities, execution, known, operator, recovering=True)

    # --- the plan -------------------------------------------------------------------

    def _take_leases(self, plan: plan_store.Plan, entities: Sequence[str], holder: str) -> None:
        """Lease every entity, or none: on a collision the ones taken are released (blocking)."""
        taken: list[str] = []
        for entity in entities:
            if not leases.acquire(self.state, plan.tenant_id, entity, holder, self.lease_seconds):
                leases.release(self.state, plan.tenant_id, taken, holder)
                raise errors.Conflict(
                    f"Entity {entity} is being acted on by another execution (single-flight): plan "
                    f"{plan.id} was not run and is still proposed; approve it again once that finishes."
                )
            taken.append(entity)

    async def run(
        self, plan: plan_store.Plan, selected: Sequence[dict[str, Any]], entities: Sequence[str],
        claim: intents.Execution, known: dict[str, intents.Intent], operator: str, *,
        recovering: bool = False, declining: bool = True,
    ) -> plan_store.Plan:
        """Dispose of each selected action in order, holding the leases; record the plan's results.

        The plan's other actions (left out of `only_actions`) get `declined`
        receipts in the same pass, so recovery finishes them like the rest
        (unless not `declining`: recovery's record of an execution that never started).

        `claim` is this holder's claim on the plan's execution: every intent is written under its
        fencing token. `known` are the intents the plan already has (a resumed execution's), by
        idempotency key.
        """
        holder = claim.holder
        stop, lost = asyncio.Event(), asyncio.Event()
        beat = asyncio.create_task(self._heartbeat(plan, entities, holder, stop, lost),
                                   name=f"lease-{plan.id}")
        concluded = False
        proposed = (await self.pool.run(plan_store.trace_context, self.state, plan.tenant_id, plan.id)
                    if tracing.active() else None)
        with tracing.span("fibric.execute", linked=tracing.links([proposed]), tenant_id=plan.tenant_id,
                          plan_id=plan.id, recovering=recovering):
            try:
                results = []
                chosen = {a["idempotency_key"] for a in selected}
                for action in plan.actions if declining else selected:
                    if lost.is_set():  # fail closed: the claim may be another holder's now; it finishes it
                        raise errors.TemporaryError(
                            f"plan {plan.id} lost its execution claim or leases while running; the actions "
                            "not yet disposed are left to recovery", delay=self.lease_seconds)
                    prior = known.get(action["idempotency_key"])
                    declined = action["idempotency_key"] not in chosen
                    with tracing.span("fibric.dispose", capability=action["capability"],
                                      idempotency_key=action["idempotency_key"]):
                        result = await self._dispose(plan, operator, action, prior, claim.token,
                                                     recovering=recovering, declined=declined)
                        tracing.annotate(decision=result["decision"], outcome=result["outcome"],
                                         receipt_id=result["receipt_id"])
                    results.append(result)
                await self._stop_heartbeat(stop, beat)
                final = await self.pool.run(self._conclude, plan, results, entities, holder)
                concluded = True
                tracing.annotate(plan_status=final.status)
                return final
            finally:
                if not concluded:
                    await self._stop_heartbeat(stop, beat)
                    await self.pool.run(leases.release, self.state, plan.tenant_id, entities, holder)

    @staticmethod
    async def _stop_heartbeat(stop: asyncio.Event, beat: asyncio.Task[None]) -> None:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await beat

    def _intents_and_operator(self, plan: plan_store.Plan) -> tuple[dict[str, intents.Intent], str]:
        """What a resumed execution recorded already, and the operator's name (blocking: one hop)."""
        return intents.for_plan(self.state, plan.tenant_id, plan.id), _operator_name(self.state, plan)

    def _conclude(
        self, plan: plan_store.Plan, results: list[dict[str, Any]], entities: Sequence[str], holder: str
    ) -> plan_store.Plan:
        """Record the plan's results, count what ran on its run, end the execution, release the
        leases: one durable commit, the one the approval is answered after (blocking: one hop)."""
        return intents.conclude(self.state, plan, results=results, entities=entities, holder=holder,
                                events_of=lambda final: [("plan.executed", views.plan(final))])

    async def _finish_execution(self, plan: plan_store.Plan) -> None:
        await self.pool.run(self._end_execution, plan)

    def _end_execution(self, plan: plan_store.Plan) -> None:
        intents.finish_execution(self.state, plan.tenant_id, plan.id, reseller_id=plan.reseller_id,
                                 events=[("plan.executed", views.plan(plan))])

    async def _heartbeat(self, plan: plan_store.Plan, entities: Sequence[str], holder: str,
                         stop: asyncio.Event, lost: asyncio.Event) -> None:
        """Renew the execution and the leases while this holder lives; a dead one stops renewing.

        Sets `lost` when the claim or a lease is gone, or when renewals have failed for two thirds
        of the lease (before it can expire under us), so `run` calls no further tool.
        """
        renewed = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.lease_seconds / 3)
                return
            try:
                kept = await self.pool.run(intents.renew_execution, self.state, plan.tenant_id, plan.id,
                                           holder, self.lease_seconds)
                gone = await self.pool.run(leases.renew, self.state, plan.tenant_id, entities, holder,
                                       self.lease_seconds)
            except errors.FibricError as e:
                log.warning("could not renew the leases of plan %s: %s", plan.id, e)
                if time.monotonic() - renewed >= self.lease_seconds * 2 / 3:
                    lost.set()
                continue
            if not kept or gone:
                log.error("plan %s: lost its execution claim or leases %s while running", plan.id, gone)
                lost.set()
                return
            renewed = time.monotonic()

    def _check_nothing_in_doubt(
        self, plan: plan_store.Plan, selected: Sequence[dict[str, Any]], entities: Sequence[str], holder: str
    ) -> None:
        """Refuse to start while an action's key awaits crash recovery in another plan (blocking)."""
        for action in selected:
            other = intents.pending_elsewhere(self.state, plan.tenant_id, action["idempotency_key"], plan.id)
            if other is not None:
                leases.release(self.state, plan.tenant_id, entities, holder)
                raise errors.Conflict(
                    f"Action {action['idempotency_key']} (entity {action['entity_key']}) of plan "
                    f"{other.plan_id} is awaiting crash recovery; plan {plan.id} is still proposed."
                )

    # --- one action -------------------------------------------------------------------

    async def _dispose(
        self, plan: plan_store.Plan, operator: str, action: dict[str, Any], intent: intents.Intent | None,
        token: int, *, recovering: bool, declined: bool = False,
    ) -> dict[str, Any]:
        key = action["idempotency_key"]
        # Only a resumed execution can find its own receipts already written.
        written = None
        if recovering:
            written = await self.pool.run(self.ledger.for_action, plan.tenant_id, plan.id, key)
        if written is not None:  # resumed after the receipt (and its intent's completion) was committed
            if intent is not None and intent.state == "pending":  # a receipt imported from an old ledger
                await self.pool.run(intents.complete, self.state, intent, written.id,
                                    events=receipt_events(written))
            return result_of(written)
        if intent is not None:  # resumed between intent and receipt
            return await self._recover(plan, intent)
        if declined:
            fields = declined_fields(plan, operator, action, "left out of the approval's only_actions",
                                     plan.decided_by)
            receipt = await self.pool.run(self._without_call, plan, fields, "declined", fields["detail"])
            return self._disposed(receipt)
        binding, unresolved = self._resolve(plan.tenant_id, action)
        step = await self.pool.run(self._prepare, plan, operator, action, binding, unresolved, token,
                                   recovering)
        if isinstance(step, intents.Intent):
            self.crash.hit("after_intent", action["capability"])
            return await self._call(step, recovering=False)
        self.on_receipt()
        return self._disposed(step)

    def _prepare(
        self, plan: plan_store.Plan, operator: str, action: dict[str, Any], binding: tools.Binding | None,
        unresolved: str, token: int, recovering: bool,
    ) -> intents.Intent | receipt_store.Receipt:
        """DEDUP, the policy's verdict, then the intent of the call (blocking: one hop for all).

        Returns the intent when the tool is to be called; otherwise the action is
        settled here (a dedup, a refusal, a call that cannot be made) and its receipt returned.
        """
        key = action["idempotency_key"]
        applied = self.ledger.applied(plan.tenant_id, key)
        if applied is not None:
            policy = {"decision": "DEDUP", "rule": "dedup", "flagged": False,
                      "reasons": [f"idempotency key {key} was applied by receipt {applied.id}"]}
            base = receipt_fields(plan, operator, action, policy, policy_id=None, policy_sha256=None)
            return self._without_call(plan, base, "deduplicated")
        verdict = disposal.decide_action(self.state, self.ledger, self.decider, plan, action, binding)
        self.crash.hit("after_decision", action["capability"])
        policy = verdict.policy_record()
        base = receipt_fields(plan, verdict.operator_name, action, policy,
                              policy_id=verdict.decision.policy_id or verdict.policy_id,
                              policy_sha256=verdict.decision.policy_sha256 or None,
                              decision_input=verdict.record)
        if verdict.value == "BLOCK":
            return self._without_call(plan, base, "refused")
        if binding is None:
            if recovering and patient(plan):
                raise errors.TemporaryError(f"recovery of plan {plan.id} waits for a connector: {unresolved}")
            return self._without_call(plan, base, "failed", {"error": unresolved})
        tool = {"connector": binding.connector, "name": binding.tool.name,
                "annotations": dict(binding.tool.annotations), "idempotent": binding.tool.idempotent}
        try:
            return intents.record(self.state, reseller_id=plan.reseller_id, tenant_id=plan.tenant_id,
                                  plan_id=plan.id, idempotency_key=key, calls_tool=True, receipt=base,
                                  tool=tool, fence=token)
        except intents.ClaimLost:  # fenced: the holder that took the execution over disposes of it
            raise
        except Exception as e:  # any failure to write it (disk full, a driver error): no intent, no call
            log.error("plan %s action %s: intent not written, tool not called: %s", plan.id, key, e)
            why = {"error": f"intent not written, tool not called: {e}"}
            return intents.settle(self.state, None, receipt_store.NewReceipt(
                **{**base, "outcome": "failed", "detail": why}), receipt_events)

    def _without_call(
        self, plan: plan_store.Plan, base: dict[str, Any], outcome: str, detail: Any = None
    ) -> receipt_store.Receipt:
        """A refusal, a dedup or a call that cannot be made: receipt (and events) only, no effect."""
        fields = {**base, "outcome": outcome, "detail": detail}
        intent = None
        try:
            intent = intents.record(self.state, reseller_id=plan.reseller_id, tenant_id=plan.tenant_id,
                                    plan_id=plan.id, idempotency_key=base["idempotency_key"],
                                    calls_tool=False, receipt=fields, tool={})
        except Exception as e:  # nothing external happens either way: the receipt still records it
            log.error("plan %s action %s: intent not written (%s); writing its %s receipt anyway", plan.id,
                      base["idempotency_key"], e, outcome)
        return intents.settle(self.state, intent, receipt_store.NewReceipt(**fields), receipt_events)

    async def _call(
        self, intent: intents.Intent, *, recovering: bool, retried: bool = False
    ) -> dict[str, Any]:
        """Call the tool of a recorded intent, then write its receipt and complete it."""
        base = intent.receipt
        capability = base["capability"]
        retry_safe = bool(intent.tool.get("idempotent"))
        # the connector is not up (yet)
        waiting = (errors.TemporaryError, connector_errors.CapabilityUnavailable)
        fields: dict[str, Any]
        try:
            result = await self._invoke(intent)
            outcome = "failed" if result.is_error else "applied"
            fields = {**base, "outcome": outcome, "detail": result.to_mcp()}
        except errors.FibricError as e:
            in_doubt = bool(getattr(e, "in_doubt", False))
            if recovering and not in_doubt and isinstance(e, waiting) and patient_since(intent.created_at):
                raise errors.TemporaryError(f"recovery of {intent.idempotency_key} waits: {e}") from e
            if in_doubt and retry_safe and not retried:
                log.warning("call of %s in doubt (%s); retrying the idempotent tool once", capability, e)
                return await self._call(intent, recovering=recovering, retried=True)
            error = {"error": str(e), "type": type(e).__name__}
            fields = in_doubt_fields(base, str(e)) if in_doubt else {**base, "outcome": "failed",
                                                                     "detail": error}
        self.crash.hit("after_response", capability)
        try:
            disposed = await self._settle(intent, fields)
        except receipt_store.AlreadyApplied as e:  # another execution applied the key while this one called
            log.error("plan %s: %s; this call is recorded in doubt", intent.plan_id, e)
            disposed = await self._settle(intent, in_doubt_fields(
                base, f"{e}: by a concurrent execution, while this one called the tool too"))
        self.crash.hit("after_receipt", capability)
        return disposed

    async def _invoke(self, intent: intents.Intent) -> tools.ToolResult:
        base = intent.receipt
        with tracing.span("fibric.tool_call", client=True, capability=base["capability"]):
            call = self.runtime.call(intent.tenant_id, base["capability"], dict(base["args"]),
                                     base["idempotency_key"], entity_key=base["entity_key"])
            if not self.crash.armed("after_request_sent", base["capability"]):
                result = await call
            else:
                task = asyncio.ensure_future(call)
                for _ in range(REQUEST_SENT_YIELDS):
                    await asyncio.sleep(0)
                self.crash.hit("after_request_sent", base["capability"])
                result = await task
            tracing.annotate(tool_error=result.is_error)
            return result

    async def _recover(self, plan: plan_store.Plan, intent: intents.Intent) -> dict[str, Any]:
        """An intent without a receipt: its executor died between writing it and the receipt."""
        if not intent.calls_tool:  # a refusal or dedup: nothing external was to happen
            return await self._settle(intent, dict(intent.receipt))
        if intent.tool.get("idempotent"):
            log.warning("plan %s: retrying %s after a crash (tool annotated idempotent)", plan.id,
                        intent.idempotency_key)
            return await self._call(intent, recovering=True)
        log.warning("plan %s: %s is in doubt after a crash (tool not idempotent): flagged, not retried",
                    plan.id, intent.idempotency_key)
        fields = in_doubt_fields(
            intent.receipt, "the executor stopped after recording this action's intent and before its "
            "receipt; the tool may or may not have acted, and it is not annotated idempotent, so it was "
            "not retried")
        return await self._settle(intent, fields)

    async def _settle(self, intent: intents.Intent | None, fields: dict[str, Any]) -> dict[str, Any]:
        """Write the receipt, complete the intent, enqueue the events: one transaction; the result."""
        receipt = await self.pool.run(intents.settle, self.state, intent, receipt_store.NewReceipt(**fields),
                                      receipt_events)
        self.on_receipt()
        return self._disposed(receipt)

    def _disposed(self, receipt: receipt_store.Receipt) -> dict[str, Any]:
        """The result of a receipt just written, counted and logged (never its args: they are the
        tenant's data)."""
        self.metrics.disposed(receipt.tenant_id, receipt.decision, receipt.outcome)
        shadow = receipt.policy.get("shadow")
        if shadow:  # the live label is the policy's own decision, even when in doubt made it an ALERT
            self.metrics.shadow_decided(receipt.tenant_id, str(receipt.policy.get("decision")),
                                        str(shadow.get("decision")), failed=bool(shadow.get("failure")))
        disposals.info("plan %s action %s: %s %s, receipt %s", receipt.plan_id, receipt.idempotency_key,
                       receipt.decision, receipt.outcome, receipt.id, extra={
                           "tenant_id": receipt.tenant_id, "plan_id": receipt.plan_id,
                           "idempotency_key": receipt.idempotency_key, "capability": receipt.capability,
                           "decision": receipt.decision, "outcome": receipt.outcome,
                           "receipt_id": receipt.id})
        return result_of(receipt)

    def _resolve(self, tenant_id: str, action: dict[str, Any]) -> tuple[tools.Binding | None, str]:
        try:
            return self.runtime.resolve(tenant_id, action["capability"]), ""
        except errors.FibricError as e:
            return None, f"capability {action['capability']} is unavailable, tool not called: {e}"


# --- helpers ------------------------------------------------------------------------------


def new_holder() -> str:
    return "exe_" + secrets.token_hex(8)


def patient(plan: plan_store.Plan) -> bool:
    return patient_since(plan.approved_at or plan.proposed_at)


def patient_since(moment: datetime) -> bool:
    """Whether recovery should still wait (rather than fail closed) on work started at `moment`."""
    return datetime.now(UTC) - moment < RECOVERY_PATIENCE


def select(plan: plan_store.Plan, only_actions: Sequence[str] | None) -> list[dict[str, Any]]:
    """The plan's actions to run, in plan order."""
    if only_actions is None:
        return list(plan.actions)
    wanted = set(only_actions)
    return [a for a in plan.actions if a.get("idempotency_key") in wanted]


def entities_of(actions: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({str(a["entity_key"]) for a in actions})


def receipt_fields(
    plan: plan_store.Plan, operator: str, action: dict[str, Any], policy: dict[str, Any], *,
    policy_id: str | None, policy_sha256: str | None, decision_input: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The NewReceipt fields known before the outcome (JSON, so an intent can carry them).

    `decision_input` is the decision record: the input the policy was evaluated on, masked; None
    when no policy ran (a dedup, a declined action, a missing policy).
    """
    return {
        "reseller_id": plan.reseller_id, "tenant_id": plan.tenant_id, "operator_id": plan.operator_id,
        "operator": operator, "capability": action["capability"], "entity_key": action["entity_key"],
        "idempotency_key": action["idempotency_key"], "decision": policy["decision"],
        "proposed_by": plan.proposed_by, "args": dict(action.get("args") or {}), "rule": policy["rule"],
        "policy": policy, "policy_id": policy_id, "policy_sha256": policy_sha256,
        "triggered_by_event": plan.event_id, "plan_id": plan.id, "run_id": plan.run_id,
        "approver": plan.approver, "decided_by": plan.decided_by,
        # What ties it to the approval's request and trace (an intent carries them to recovery).
        "request_id": tracing.request_id(), "trace_id": tracing.trace_id(),
        "decision_input": decision_input,
    }


def declined_fields(plan: plan_store.Plan, operator: str, action: Mapping[str, Any], why: str,
                    by: Mapping[str, Any] | None) -> dict[str, Any]:
    """The NewReceipt fields of an action a person did not approve (fibric/controller/declines.py).

    It carries the decision the plan showed (nothing is evaluated again:
    nothing runs) and the rule `declined`.
    """
    shown = action.get("decision")
    decision = shown if shown in receipt_store.DECISIONS else "BLOCK"  # none shown: it did not run either way
    policy = {"decision": decision, "rule": DECLINED_RULE, "flagged": False, "reasons": [why]}
    base = receipt_fields(plan, operator, dict(action), policy, policy_id=plan.policy_id,
                          policy_sha256=None)
    return {**base, "decided_by": dict(by) if by is not None else None, "outcome": "declined",
            "detail": {"reason": why}}


def in_doubt_fields(base: dict[str, Any], why: str) -> dict[str, Any]:
    """An in_doubt receipt: raised to a person (ALERT), whatever the policy had decided."""
    policy = {**base["policy"], "flagged": True, "decided": base["decision"],
              "reasons": [*base["policy"].get("reasons", []), why]}
    return {**base, "decision": "ALERT", "rule": IN_DOUBT_RULE, "policy": policy, "outcome": "in_doubt",
            "detail": {"error": why}}


def flagged(receipt: receipt_store.Receipt) -> bool:
    """Whether a person should look: an ALERT (or in-doubt) action that ran; a declined one did not."""
    if receipt.outcome == "declined":
        return False
    return bool(receipt.policy.get("flagged")) or receipt.decision == "ALERT"


def result_of(receipt: receipt_store.Receipt) -> dict[str, Any]:
    """One entry of the approve response's `results`."""
    result: dict[str, Any] = {"idempotency_key": receipt.idempotency_key, "decision": receipt.decision,
                              "outcome": receipt.outcome, "receipt_id": receipt.id}
    if receipt.outcome == "refused":
        result["rule"] = receipt.rule
    if flagged(receipt):
        result["flagged"] = True
    return result


def receipt_events(receipt: receipt_store.Receipt) -> list[tuple[str, dict[str, Any]]]:
    """The webhook events of one receipt, enqueued in the transaction that writes it."""
    return [("receipt.created", views.receipt(receipt)), ("action.disposed", disposed_event(receipt))]


def disposed_event(receipt: receipt_store.Receipt) -> dict[str, Any]:
    """The `action.disposed` webhook payload: the result, where it belongs, and the person flag."""
    return {**result_of(receipt), "object": "action_result", "plan_id": receipt.plan_id,
            "capability": receipt.capability, "entity_key": receipt.entity_key, "rule": receipt.rule,
            "flagged": flagged(receipt), "approver": receipt.approver}


def _operator_name(state: store.StateStore, plan: plan_store.Plan) -> str:
    try:
        return state.get_object(plan.tenant_id, "Operator", plan.operator_id).name
    except errors.NotFound:
        return plan.operator_id
