"""The plug point every policy engine implements, and the counters they keep.

Two engines implement `Engine`: embedded (regopy, in worker processes) and OPA (an OPA
server over its REST API). Both evaluate the same compiled policy version and
return the raw value of its query; neither decides anything. Reading that
value, and failing closed, happens in `evaluate()` only.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from fibric.policies import decision

if TYPE_CHECKING:
    from fibric.policies import compiler


@dataclass(frozen=True)
class Outcome:
    """A query's value, or `defined=False` when the query is undefined for the input."""

    defined: bool
    value: Any = None
    queued: float = 0.0  # seconds spent waiting for a worker: not part of the evaluation's budget


UNDEFINED = Outcome(defined=False)


class Engine(Protocol):
    """Evaluates compiled policies; raises failures.* when it cannot produce a value."""

    name: str  # "embedded" | "opa": recorded on every Decision
    timeout: float  # default time budget of one decision, in seconds
    stats: Stats

    def load(self, policy: compiler.CompiledPolicy) -> None:
        """Make `policy` ready to evaluate (the OPA engine pushes it). Idempotent.

        Raises errors.SpecInvalid if the engine rejects the Rego and
        errors.TemporaryError if the engine cannot be reached; the reconciler
        retries the latter.
        """
        ...

    def query(
        self, policy: compiler.CompiledPolicy, input_doc: Mapping[str, Any], timeout: float
    ) -> Outcome:
        """The value of `policy.query` for `input_doc`, within `timeout` seconds."""
        ...

    def close(self) -> None:
        """Release processes, threads and connections. Idempotent."""
        ...


class Stats:
    """Decision counters of one engine, safe to update from many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.decisions = 0
        self.verdicts: collections.Counter[str] = collections.Counter()
        self.failures: collections.Counter[str] = collections.Counter()
        # Must stay 0: decisions that were not BLOCK although the engine or the output failed.
        self.non_block_after_failure = 0

    def record(self, result: decision.Decision, *, failed: bool) -> decision.Decision:
        """Count `result`, and make sure a failed evaluation can only ever come out as BLOCK."""
        with self._lock:
            self.decisions += 1
            if failed:
                self.failures[result.failure or "unknown"] += 1
                if result.decision is not decision.Verdict.BLOCK:
                    self.non_block_after_failure += 1
                    result = dataclasses.replace(result, decision=decision.Verdict.BLOCK)
            self.verdicts[result.decision.value] += 1
        return result

    def snapshot(self) -> dict[str, Any]:
        """A copy for metrics endpoints and tests."""
        with self._lock:
            return {
                "decisions": self.decisions,
                "verdicts": dict(self.verdicts),
                "failures": dict(self.failures),
                "non_block_after_failure": self.non_block_after_failure,
            }
