"""Why an evaluation could not produce a trustworthy decision.

Engines and the result checks raise these; `evaluate()` is the only code that
catches them, and it turns every one into BLOCK with `rule = "fail-closed:" +
cause`. They never leave the policies package, so they are not part of
`fibric.errors`: no caller is expected to handle them, only to read the
resulting Decision.
"""

from __future__ import annotations


class PolicyFailure(Exception):
    """Base: the engine or the policy's output cannot be trusted for this action."""

    cause = "engine-error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.cause)
        self.detail = detail or self.cause


class Undefined(PolicyFailure):
    """The query has no value for this input (no rule matched and no default)."""

    cause = "undefined"


class NotAnObject(PolicyFailure):
    """The query's value is not a JSON object."""

    cause = "not-an-object"


class UnknownDecision(PolicyFailure):
    """`decision` is missing or not one of ALLOW, ALERT, BLOCK."""

    cause = "unknown-decision"


class Malformed(PolicyFailure):
    """`rule` or `reasons` do not have the documented shape."""

    cause = "malformed"


class EvalError(PolicyFailure):
    """Evaluation raised an error: conflicting outputs, a built-in error, ..."""

    cause = "eval-error"


class Timeout(PolicyFailure):
    """The decision took longer than its time budget."""

    cause = "timeout"


class Busy(PolicyFailure):
    """No worker took the evaluation within its wait bound (the pool, or the tenant's cap, was full)."""

    cause = "engine-busy"


class Unreachable(PolicyFailure):
    """The engine could not be reached (connection refused, DNS, reset)."""

    cause = "engine-unreachable"


class EngineError(PolicyFailure):
    """The engine answered with an error of its own (5xx, 4xx) or crashed internally."""

    cause = "engine-error"


class BadResponse(PolicyFailure):
    """The engine answered 2xx with a body that is not OPA's response shape."""

    cause = "bad-response"


class InputInvalid(PolicyFailure):
    """The input document cannot be represented exactly as JSON (NaN, a non-string key, ...)."""

    cause = "input-invalid"
