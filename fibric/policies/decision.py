"""What a policy decided about one action, and how a policy's output is read.

The policy's query must evaluate to `{"decision": "ALLOW"|"ALERT"|"BLOCK",
"rule": "<non-empty string>", "reasons": ["...", ...]}` (reasons optional,
other keys ignored). Anything else is not a decision: `interpret()` raises the
failure that `evaluate()` turns into BLOCK.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from fibric.policies import failures


class Verdict(enum.StrEnum):
    ALLOW = "ALLOW"  # run
    ALERT = "ALERT"  # run, and flag a person
    BLOCK = "BLOCK"  # refuse


@dataclass(frozen=True)
class Decision:
    """The trust decision for one action, with what a receipt records about it."""

    decision: Verdict
    rule: str
    reasons: tuple[str, ...] = ()
    policy_id: str = ""
    policy_sha256: str = ""  # sha256 of the exact Rego source that decided
    engine: str = ""  # "embedded" | "opa"
    failure: str | None = None  # the fail-closed cause ("timeout", ...), None when the policy decided
    duration_us: int = 0

    @property
    def fail_closed(self) -> bool:
        """True when this BLOCK comes from a failure, not from the policy's own rules."""
        return self.failure is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what `fibric policy eval` prints and receipts store)."""
        return {
            "decision": self.decision.value,
            "rule": self.rule,
            "reasons": list(self.reasons),
            "policy_id": self.policy_id,
            "policy_sha256": self.policy_sha256,
            "engine": self.engine,
            "failure": self.failure,
            "duration_us": self.duration_us,
        }


def interpret(value: Any) -> tuple[Verdict, str, tuple[str, ...]]:
    """(verdict, rule, reasons) from the query's value, or the failure that makes it untrustworthy."""
    if not isinstance(value, dict):
        raise failures.NotAnObject(f"the policy returned {_describe(value)}, not an object")
    raw = value.get("decision")
    try:
        verdict = Verdict(raw) if isinstance(raw, str) else None
    except ValueError:
        verdict = None
    if verdict is None:
        raise failures.UnknownDecision(f"decision {raw!r} is not one of ALLOW, ALERT, BLOCK")
    rule = value.get("rule")
    if not isinstance(rule, str) or not rule:
        raise failures.Malformed(f"rule must be a non-empty string, got {rule!r}")
    reasons = value.get("reasons", [])
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise failures.Malformed(f"reasons must be a list of strings, got {reasons!r}")
    return verdict, rule, tuple(reasons)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    kind = {bool: "a boolean", str: "a string", list: "an array"}.get(type(value))
    if kind is None:
        kind = "a number" if isinstance(value, int | float) else type(value).__name__
    text = repr(value)
    return f"{kind} ({text[:60]})"
