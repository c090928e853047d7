"""One operator run: sense, let the operator's model propose, pre-decide each action, store the plan.

A run is started by the router (events queued for one entity) or the
scheduler (a cron tick), always through `fibric.store.run_store.start`, which
holds the single-flight lease for the run's whole length. The runner then
builds the proposer's `Situation` (the run's events, what `sense`
capabilities returned on a scheduled run, the operator's tools), asks the
proposer chosen by `spec.model`, and turns its actions into an
ExecutionPlan: each action carries the `decision` the executor would make
now (a dry-run of the operator's policy through the shared Decider, which
never raises, over the same input the executor builds: the triggering
event, the tool's annotations, and, given the receipt ledger, the counts
of recently applied actions). Nothing here calls a capability with side
effects: a `sense` capability whose tool is not read-only fails the run.

Every failure (a proposal error, a sense call failing, a bug) ends as a
failed run with its message, visible on the run and the operator's
`last_run`; the lease is released either way, so the next event gets a run.
A run that proposes nothing stores no plan, and a proposal identical to a
plan of the same operator still awaiting approval (same actions, same
idempotency keys) stores no second plan: the run points at the open one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import httpx
import pydantic

from fibric import connectors, errors, policies, proposers, specs, store, threads, timefmt, tracing
from fibric import metrics as metrics_module
from fibric import settings as settings_module
from fibric.controller import decide, disposal
from fibric.store import event_store, model_calls, plan_store, receipt_store, routing_store, run_store

log = logging.getLogger(__name__)
SHUT_DOWN = "interrupted: the server shut down before the run finished"
SITUATION_EVENT = ("id", "type", "entity_key", "idempotency_key", "occurred_at", "data")


class Runner:
    """Runs operators for the router and the scheduler; safe to share between them."""

    def __init__(
        self,
        state: store.StateStore,
        decider: decide.Decider,
        *,
        runtime: connectors.ConnectorRuntime | None = None,
        ledger: receipt_store.Ledger | None = None,
        llm: settings_module.LlmSettings | None = None,
        environ: Mapping[str, str] | None = None,
        http: httpx.AsyncClient | None = None,
        lease_seconds: float = run_store.DEFAULT_LEASE_SECONDS,
        max_events: int = run_store.DEFAULT_MAX_EVENTS,
        sense_timeout: float | None = None,
        clock: Callable[[], datetime] = timefmt.now,
        pool: threads.Pool | None = None,
        plans_expire: settings_module.ExecutorSettings | None = None,
        metrics: metrics_module.Metrics | None = None,
    ) -> None:
        """`pool` runs the blocking store and policy work (the system's executor pool);
        `plans_expire` says how long a proposed plan waits for a decision; `metrics` counts
        finished runs."""
        self.state = state
        self.metrics = metrics or metrics_module.Metrics()
        self.pool = pool or threads.standalone("executor")
        self.plans_expire = plans_expire or settings_module.ExecutorSettings()
        self.decider = decider
        self.runtime = runtime
        self.ledger = ledger
        self.llm = llm or settings_module.LlmSettings()
        self.environ = environ
        self.http = http
        self.lease_seconds = lease_seconds
        self.max_events = max_events
        self.sense_timeout = sense_timeout
        self.clock = clock

    # --- entry points -----------------------------------------------------------

    async def run_events(self, key: routing_store.PendingKey) -> run_store.Run | None:
        """Run the operator over every event queued for its entity; None when there is nothing to do.

        Events queued for an operator that was deleted, paused or drafted
        since they were routed are dropped: such operators do not run.
        """
        operator = await self.pool.run(self._active_operator, key.tenant_id, key.operator_id)
        if operator is None:
            dropped = await self.pool.run(routing_store.discard, self.state, key.tenant_id, key.operator_id)
            log.info("dropped %d queued events of operator %s: deleted or not active", dropped,
                     key.operator_id)
            return None
        run = await self._start(
            reseller_id=operator.reseller_id, tenant_id=key.tenant_id, operator_id=operator.id,
            operator=operator.name, entity_key=key.entity_key, trigger="event", max_events=self.max_events,
        )
        return None if run is None else await self._complete(run, operator)

    async def run_schedule(self, tenant_id: str, operator: store.StoredObject) -> run_store.Run | None:
        """One scheduled run of the operator; None if its previous scheduled run is still going."""
        run = await self._start(
            reseller_id=operator.reseller_id, tenant_id=tenant_id, operator_id=operator.id,
            operator=operator.name, entity_key=run_store.SCHEDULE_KEY, trigger="schedule",
        )
        return None if run is None else await self._complete(run, operator)

    # --- one run --------------------------------------------------------------------

    async def _start(self, **fields: Any) -> run_store.Run | None:
        """Start a run (None when one is already going for its key).

        A shutdown that lands while the run's row is being written still hands
        its events back at once, instead of leaving them to the lease reaper.
        """
        started = asyncio.ensure_future(
            self.pool.run(run_store.start, self.state, lease_seconds=self.lease_seconds, **fields))
        try:
            return await asyncio.shield(started)
        except asyncio.CancelledError:
            run = await started  # the row is committed (or not) in its thread either way
            if run is not None:
                await self.pool.run(run_store.release, self.state, run,
                                    SHUT_DOWN)
            raise

    async def _complete(self, run: run_store.Run, operator: store.StoredObject) -> run_store.Run:
        """Carry the started run to its end; whatever happens, finish it (or hand its events back)."""
        calls: list[proposers.ModelCall] = []  # every request to an LLM route, kept with the run
        try:
            ingests = (await self.pool.run(event_store.trace_contexts, self.state, run.tenant_id,
                                           run.event_ids) if tracing.active() else [])
            with tracing.span("fibric.run", linked=tracing.links(ingests), tenant_id=run.tenant_id,
                              run_id=run.id, operator=operator.name, trigger=run.trigger):
                outcome = await self._execute(run, operator, calls.append)
                tracing.annotate(outcome=outcome.status, plan_id=outcome.plan_id)
        except asyncio.CancelledError:  # shutdown: the events go back to the queue for the next start
            await self.pool.run(run_store.release, self.state, run,
                                    SHUT_DOWN)
            raise
        except Exception as e:
            if not isinstance(e, errors.FibricError):
                log.exception("run %s of operator %s failed unexpectedly", run.id, operator.name)
            outcome = run_store.Outcome("failed", sensed=run.sensed, error=_message(e))
        finished = await self.pool.run(self._finish, run, outcome, calls)
        self.metrics.run_finished(run.tenant_id, run.trigger, finished.status)
        if finished.status == "failed":
            log.warning("run %s of operator %s failed: %s", run.id, operator.name, finished.error)
        return finished

    def _finish(self, run: run_store.Run, outcome: run_store.Outcome,
                calls: list[proposers.ModelCall]) -> run_store.Run:
        """The run's outcome, then its model calls, linked to the plan it stored (blocking)."""
        finished = run_store.finish(self.state, run, outcome)
        try:
            model_calls.record(self.state, reseller_id=run.reseller_id, tenant_id=run.tenant_id,
                               run_id=run.id, operator_id=run.operator_id, plan_id=finished.plan_id,
                               calls=[vars(call) for call in calls])
        except errors.FibricError as e:  # the run is over either way; what it cost is only not on record
            log.error("run %s: its %d model call records were not written: %s", run.id, len(calls), e)
        return finished

    async def _execute(self, run: run_store.Run, operator: store.StoredObject,
                       on_call: Callable[[proposers.ModelCall], None]) -> run_store.Outcome:
        try:
            spec = specs.models.OperatorSpec.model_validate(operator.spec)
        except pydantic.ValidationError as e:
            raise errors.PermanentError(f"the operator's stored spec is invalid: {e}") from None
        events = await self.pool.run(run_store.events_of, self.state, run)
        sensed, items = await self._sense(run.tenant_id, spec) if run.trigger == "schedule" else ({}, 0)
        count = len(events) + items
        proposer = proposers.for_model(spec.model, run.tenant_id, self.llm, environ=self.environ,
                                       http=self.http, on_call=on_call)
        situation = proposers.Situation(
            tenant_id=run.tenant_id, operator_id=operator.id, operator_name=operator.name, spec=spec,
            events=[{k: e[k] for k in SITUATION_EVENT} for e in events], sensed=sensed,
            tools=self._tools(run.tenant_id, spec),
        )
        # Any Proposer, not only ours: one plan never holds the same effect twice.
        proposed = proposers.dedup(await proposer.propose(situation))
        foreign = sorted({p.capability for p in proposed} - set(spec.capabilities))
        if foreign:  # proposers check this too; a plan must never carry one
            raise proposers.ProposalError(
                f"{proposer.name} proposed {', '.join(foreign)}, "
                f"which operator '{operator.name}' does not have")
        if not proposed:
            return run_store.Outcome("succeeded", sensed=count, proposed=0, proposed_by=proposer.name)
        bindings = {p.capability: self._binding(run.tenant_id, p.capability) for p in proposed}
        plan_id, digest = await self.pool.run(
            self._plan, run, operator, spec, proposed, events, bindings, proposer.name)
        return run_store.Outcome("succeeded", sensed=count, proposed=len(proposed), plan_id=plan_id,
                                 proposal_digest=digest, proposed_by=proposer.name)

    def _plan(
        self,
        run: run_store.Run,
        operator: store.StoredObject,
        spec: specs.models.OperatorSpec,
        proposed: list[proposers.ProposedAction],
        events: list[dict[str, Any]],
        bindings: Mapping[str, connectors.Binding | None],
        proposed_by: str,
    ) -> tuple[str, str]:
        """In a worker thread: decide each action, then store the plan unless an open one says the same."""
        bare: list[dict[str, Any]] = [
            {"capability": p.capability, "entity_key": p.entity_key, "idempotency_key": p.idempotency_key,
             "args": p.args}
            for p in proposed
        ]
        digest = plan_store.actions_digest(bare)  # the same effects proposed again, whatever the rationale
        why = {p.idempotency_key: p.rationale for p in proposed}
        existing = run_store.open_plan(self.state, run.tenant_id, operator.id, digest)
        if existing is not None:
            return existing, digest
        who = {"id": operator.id, "name": operator.name, "labels": operator.labels}
        now = self.clock()
        actions = []
        policy_id: str | None = None  # the bound policy's, as each decision reads it
        for action in bare:
            binding = bindings.get(action["capability"])
            counts = None
            if self.ledger is not None:
                counts = disposal.recent_counts(self.ledger, run.tenant_id, entity_key=action["entity_key"],
                                                operator_id=operator.id, capability=action["capability"],
                                                now=now)
            try:
                doc = policies.build_input(
                    tenant_id=run.tenant_id, operator=who, capability=action["capability"],
                    entity_key=action["entity_key"], idempotency_key=action["idempotency_key"],
                    args=action["args"], event=_trigger(events, action["entity_key"]), plan_id=None,
                    tool=disposal.tool_doc(binding), counts=counts, now=now,
                    tool_changed=binding.tool_changed if binding is not None else None)
            except ValueError as e:
                raise proposers.ProposalError(f"action {action['capability']} cannot be decided: {e}") from e
            # A preview is not a decision of record, so no shadow; its record is kept all the same.
            decided = self.decider.decide_recorded(run.tenant_id, operator, doc, shadow=False)
            decision, policy_id = decided.decision, decided.policy_id
            actions.append({**action, "decision": decision.decision.value, "rule": decision.rule,
                            "rationale": why.get(action["idempotency_key"]),
                            "policy_sha256": decision.policy_sha256 or None,
                            "decision_input": decided.record})
        plan = plan_store.propose(self.state, run.tenant_id, operator_id=operator.id, actions=actions,
                                  policy_id=policy_id, proposed_by=proposed_by, run_id=run.id,
                                  event_id=events[-1]["id"] if events else None,
                                  event_ids=[e["id"] for e in events], operator_name=operator.name,
                                  ttl=self.plans_expire.plan_ttl(spec.plan_ttl_seconds),
                                  trace_context=tracing.traceparent())
        return plan.id, digest

    # --- sensing and tools -------------------------------------------------------------

    async def _sense(self, tenant_id: str, spec: specs.models.OperatorSpec) -> tuple[dict[str, Any], int]:
        """Call each read-only `sense` capability with no arguments: (capability -> result, items read)."""
        sensed: dict[str, Any] = {}
        items = 0
        for capability in spec.sense:
            if self.runtime is None:
                raise errors.TemporaryError(
                    f"cannot sense '{capability}': no connector runtime in this process")
            binding = self.runtime.resolve(tenant_id, capability)
            if binding.tool.side_effect:
                raise errors.PermanentError(
                    f"sense capability '{capability}' maps to tool '{binding.tool.name}' of connector "
                    f"'{binding.connector}', which is not read-only (readOnlyHint); sensing never calls it")
            result = await self.runtime.call(tenant_id, capability, {}, None, timeout=self.sense_timeout)
            if result.is_error:
                raise errors.TemporaryError(
                    f"sense capability '{capability}' failed: {_text(result.content)}")
            value = result.structured_content if result.structured_content is not None else {
                "content": result.content}
            sensed[capability] = value
            items += _items(value)
        return sensed, items

    def answer_check(self, operator: store.StoredObject) -> tuple[bool, str] | None:
        """Whether the operator's LLM route asks for its answer strictly, with the tools its
        connectors offer now (the StructuredOutput condition; proposers.answer_strictness).
        On the event loop: it reads the connector runtime."""
        if operator.spec.get("model", proposers.RULES) == proposers.RULES:
            return None
        try:
            spec = specs.models.OperatorSpec.model_validate(operator.spec)
        except pydantic.ValidationError:
            return None
        return proposers.answer_strictness(proposers.Situation(
            tenant_id=operator.tenant_id, operator_id=operator.id, operator_name=operator.name, spec=spec,
            events=[], sensed={}, tools=self._tools(operator.tenant_id, spec)), self.llm)

    def _tools(self, tenant_id: str, spec: specs.models.OperatorSpec) -> list[proposers.Tool]:
        """The operator's capabilities as its connectors describe them (unknown ones: empty schema)."""
        tools = []
        for capability in spec.capabilities:
            binding = self._binding(tenant_id, capability)
            if binding is None:
                tools.append(proposers.Tool(capability, None, {}, True))
            else:
                tools.append(proposers.Tool(capability, binding.tool.description,
                                            dict(binding.tool.input_schema), binding.tool.side_effect))
        return tools

    def _binding(self, tenant_id: str, capability: str) -> connectors.Binding | None:
        if self.runtime is None:
            return None
        try:
            return self.runtime.resolve(tenant_id, capability)
        except errors.FibricError:
            return None  # no connector for it right now: the policy sees no tool annotations

    # --- store reads (worker threads) ------------------------------------------------------

    def _active_operator(self, tenant_id: str, operator_id: str) -> store.StoredObject | None:
        try:
            operator = self.state.get_object(tenant_id, "Operator", operator_id)
        except errors.NotFound:
            return None
        return operator if operator.spec.get("lifecycle", "active") == "active" else None


def _trigger(events: list[dict[str, Any]], entity_key: str) -> dict[str, Any] | None:
    """The event an action answers: the newest of the run's events about its entity, else the newest."""
    for event in reversed(events):
        if event.get("entity_key") == entity_key:
            return event
    return events[-1] if events else None


def _items(value: Any) -> int:
    """Records in a sensed result: a list's length, or the length of an object's one list, else 1."""
    if isinstance(value, list):
        return len(value)
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1:
            return len(lists[0])
    return 1


def _text(content: list[dict[str, Any]]) -> str:
    text = " ".join(str(block.get("text", "")) for block in content if block.get("type") == "text").strip()
    return text or "the tool reported an error"


def _message(error: BaseException) -> str:
    return str(error) or type(error).__name__
