"""Whether a policy engine can decide now: the policy check of GET /readyz.

The engines share no notion of "up" (worker processes for the embedded one,
an HTTP server for OPA), but both can decide. So the probe asks for a real
decision of a constant policy, through `evaluate`, the same path every
action takes: ready when it comes back ALLOW, and the fail-closed cause
otherwise (unreachable, timeout, engine-busy, ...). The policy is compiled
once, in a compile worker like any other (a few seconds on a cold start):
`warm()` does it ahead of the first probe.
"""

from __future__ import annotations

import logging
import threading

from fibric.policies import compiler, failclosed
from fibric.policies import engine as engine_module

SOURCE = 'package fibric.readiness\n\ndecision := {"decision": "ALLOW", "rule": "ready"}\n'
log = logging.getLogger(__name__)
PATIENCE = 1.0  # seconds a probe decision may take: a first one loads the bundle into a worker


class Probe:
    """The readiness check of one engine; blocking, safe to call from many threads."""

    def __init__(self, engine: engine_module.Engine) -> None:
        self.engine = engine
        self._policy: compiler.CompiledPolicy | None = None
        self._lock = threading.Lock()

    def check(self) -> str | None:
        """None when the engine decides; else why not (the fail-closed rule)."""
        decided = failclosed.evaluate(self.engine, self._compiled(), {},
                                      timeout=max(self.engine.timeout, PATIENCE))
        return None if decided.decision.value == "ALLOW" else decided.rule

    def warm(self) -> None:
        """Compile the probe's policy now (blocking), so the first probe only decides."""
        try:
            self._compiled()
        except Exception as e:  # the probe compiles it again, and reports what fails
            log.warning("the readiness policy did not compile: %s", e)

    def _compiled(self) -> compiler.CompiledPolicy:
        with self._lock:
            if self._policy is None:
                self._policy = compiler.compile(SOURCE, query="data.fibric.readiness.decision",
                                                name="readiness.rego", policy_id="fibric-readiness")
            return self._policy
