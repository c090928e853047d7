"""The default engine: rego-cpp in this process, no server to run.

Each compiled policy version carries a serialized bundle; each thread that
evaluates loads it once into its own interpreter (rego-cpp interpreters hold
the input as state, so sharing one across threads returns wrong decisions)
and reuses it for every later decision. Only the parts of the input the
policy's source can reference are handed to rego-cpp (see lint.input_paths).

rego-cpp cannot be interrupted mid-evaluation. With `workers=0` (the default,
fastest) the caller's thread evaluates and `evaluate()` BLOCKs a decision that
came back over budget; the caller waits for the slow evaluation to finish.
With `workers=N` evaluations run on N engine threads and the caller gets its
BLOCK at the deadline while the runaway evaluation finishes in the background.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Mapping
from typing import Any

from fibric.policies import compiler, engine, failures, inputs, rego


class EmbeddedEngine:
    name = "embedded"

    def __init__(self, *, timeout: float = 0.1, workers: int = 0, bundles_per_thread: int = 64) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if workers < 0:
            raise ValueError("workers must be 0 or more")
        self.timeout = timeout
        self.stats = engine.Stats()
        self._capacity = bundles_per_thread
        self._local = threading.local()
        self._pool = (
            concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="fibric-rego")
            if workers else None
        )

    def load(self, policy: compiler.CompiledPolicy) -> None:
        """Nothing to push: the bundle travels with the policy. Loads it on this thread early."""
        if self._pool is None:
            self._session().prepare(policy.key, policy.bundle)

    def query(
        self, policy: compiler.CompiledPolicy, input_doc: Mapping[str, Any], timeout: float
    ) -> engine.Outcome:
        if self._pool is None:
            return self._run(policy, input_doc)
        future = self._pool.submit(self._run, policy, input_doc)
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise failures.Timeout(f"no decision within {timeout * 1000:.1f} ms") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, policy: compiler.CompiledPolicy, input_doc: Mapping[str, Any]) -> engine.Outcome:
        # The whole document must be valid JSON, as on the OPA engine, even where the policy never reads.
        inputs.check_json(input_doc)
        readable = inputs.prune(input_doc, policy.input_paths)
        return self._session().evaluate(policy.key, policy.bundle, readable)

    def _session(self) -> rego.Session:
        session: rego.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = rego.Session(self._capacity)
        return session
