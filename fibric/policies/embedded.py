"""The default engine: rego-cpp in worker processes that can be killed, no server to run.

rego-cpp cannot be interrupted mid-evaluation and a thread cannot be killed,
so a policy that loops for seconds would burn those seconds of CPU on every
action however short its budget. This engine therefore evaluates in a small
pool of long-lived worker processes (workerpool.py, forked from one zygote
per engine, zygote.py), each with its own interpreter and the bundles it has
been sent. One decision:

1. the input is checked (exact JSON) and pruned to what the policy can read
   (lint.input_paths), then encoded once, in the caller's thread;
2. the policy version's circuit breaker (breaker.py) BLOCKs it outright if
   that version keeps timing out;
3. the tenant's in-flight cap (fairness.py) and a free worker are waited for,
   at most until the wait bound (failures.Busy past it);
4. the worker evaluates; at the deadline the caller gets failures.Timeout and
   the worker is SIGKILLed, so its CPU stops, and replaced in the background.
   A worker that dies mid-evaluation is an engine failure, also replaced.

`evaluate()` turns each of those failures into BLOCK. Safe to call from many
threads at once; `close()` kills the workers and returns once they are gone.
"""

from __future__ import annotations

import dataclasses
import os
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from fibric.policies import breaker, compiler, engine, failures, fairness, inputs, regoworker, workerpool


def default_workers() -> int:
    """The pool size when FIBRIC_POLICY_WORKERS is 0 or unset: one per CPU we may run on, at least 2."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(2, cpus)


QUEUE_TIMEOUT = 1.0  # seconds a decision may wait for a tenant slot and a worker, beside its budget


class EmbeddedEngine:
    name = "embedded"

    def __init__(
        self,
        *,
        timeout: float = 0.1,
        workers: int = 0,
        queue_timeout: float | None = None,
        tenant_max_in_flight: int = 0,
        breaker_timeouts: int = 3,
        breaker_cooldown: float = 30.0,
        bundles_per_worker: int = 64,
        start_timeout: float = 30.0,
    ) -> None:
        """Start the worker processes (returns once they are ready, or after `start_timeout`).

        `workers` 0 means default_workers(); `queue_timeout` None means
        QUEUE_TIMEOUT; `tenant_max_in_flight` 0 means all workers but one (at
        least 1); `breaker_timeouts` 0 never opens a circuit.
        """
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if workers < 0 or tenant_max_in_flight < 0:
            raise ValueError("workers and tenant_max_in_flight must be 0 (the default) or more")
        if queue_timeout is not None and queue_timeout <= 0:
            raise ValueError("queue_timeout must be positive")
        size = workers or default_workers()
        self.timeout = timeout
        self.queue_timeout = queue_timeout
        self.stats = engine.Stats()
        self.breaker = breaker.Breaker(breaker_timeouts, breaker_cooldown)
        self.tenants = fairness.TenantSlots(tenant_max_in_flight or max(1, size - 1))
        self.pool = workerpool.WorkerPool(size, bundles_per_worker=bundles_per_worker,
                                          start_timeout=start_timeout)
        # An engine that is dropped without close() (a test, a one-off CLI call) still stops its processes.
        self._finalizer = weakref.finalize(self, self.pool.close)

    def load(self, policy: compiler.CompiledPolicy) -> None:
        """Nothing to push: each worker loads the bundle on its first decision for this version."""

    def query(
        self, policy: compiler.CompiledPolicy, input_doc: Mapping[str, Any], timeout: float
    ) -> engine.Outcome:
        started = time.monotonic()
        # The whole document must be valid JSON, as on the OPA engine, even where the policy never reads.
        inputs.check_json(input_doc)
        input_json = regoworker.encode_input(inputs.prune(input_doc, policy.input_paths))
        tenant = _tenant_of(input_doc)
        circuit = (tenant, policy.key)
        probe = self.breaker.admit(circuit)
        # Waiting for a slot and a worker is bounded apart from the evaluation's budget: a busy
        # machine queues a tenant's decisions rather than refusing them (docs/policies.md).
        wait_until = started + (QUEUE_TIMEOUT if self.queue_timeout is None else self.queue_timeout)
        try:
            with self.tenants.slot(tenant, wait_until):
                queued = time.monotonic() - started
                outcome = self.pool.evaluate(
                    policy.key, policy.bundle, input_json, wait_until=wait_until, timeout=timeout)
        except failures.Timeout as e:
            self.breaker.record(circuit, timed_out=True)
            raise failures.Timeout(f"no decision within {timeout * 1000:.1f} ms; {e.detail}") from None
        except (failures.Busy, workerpool.Crashed):
            self.breaker.abandon(circuit, probe)  # not evaluated to the end: says nothing about the policy
            raise
        except failures.PolicyFailure:  # an answer in time, if not a decision: the policy is not hanging
            self.breaker.record(circuit, timed_out=False)
            raise
        except BaseException:
            self.breaker.abandon(circuit, probe)
            raise
        self.breaker.record(circuit, timed_out=False)
        return dataclasses.replace(outcome, queued=queued + outcome.queued)

    def query_many(
        self, policy: compiler.CompiledPolicy, input_docs: Sequence[Mapping[str, Any]], timeout: float
    ) -> list[engine.Outcome | failures.PolicyFailure]:
        """Each document's outcome, or its failure, evaluated by one worker in one exchange.

        For `fibric policy replay`: one bundle, many recorded inputs, no round trip each.
        `timeout` bounds the whole batch (the worker is killed past it, and the batch
        raises failures.Timeout); no circuit breaker, as a candidate is not a live policy.
        """
        results: list[engine.Outcome | failures.PolicyFailure | None] = [None] * len(input_docs)
        encoded: list[bytes] = []
        sent: list[int] = []
        for n, document in enumerate(input_docs):
            try:
                inputs.check_json(document)
                encoded.append(regoworker.encode_input(inputs.prune(document, policy.input_paths)))
                sent.append(n)
            except failures.PolicyFailure as e:
                results[n] = e
        if encoded:
            started = time.monotonic()
            wait_until = started + (QUEUE_TIMEOUT if self.queue_timeout is None else self.queue_timeout)
            with self.tenants.slot(_tenant_of(input_docs[sent[0]]), wait_until):
                answers = self.pool.evaluate_many(policy.key, policy.bundle, regoworker.encode_many(encoded),
                                                  wait_until=wait_until, timeout=timeout)
            if len(answers) != len(sent):
                raise failures.EngineError(f"{len(answers)} answers to a batch of {len(sent)}")
            for n, answer in zip(sent, answers, strict=True):
                results[n] = answer
        return [r for r in results if r is not None]

    def processes(self) -> list[int]:
        """The pids of this engine's zygote and live workers (for tests and metrics)."""
        return self.pool.pids()

    def close(self) -> None:
        """Kill the workers and the zygote; returns once they are gone (a few ms)."""
        self._finalizer()


def _tenant_of(input_doc: Mapping[str, Any]) -> str:
    """The tenant the in-flight cap and the breaker count against ("" when the input names none)."""
    tenant = input_doc.get("tenant")
    if isinstance(tenant, Mapping):
        tenant_id = tenant.get("id")
        if isinstance(tenant_id, str):
            return tenant_id
    return ""
