"""Test-only crash injection: SIGKILL this process at a named step of the executor.

The crash-matrix tests (tests/executor/test_crash_matrix.py) start `fibric
serve` with FIBRIC_CRASHPOINT=<point> or <point>@<capability> and expect the
process to die, uncleanly, exactly there; recovery on the next start must
then leave at most one external effect per idempotency key. The variable is
read once, when serve builds the executor. Unset (always, outside those
tests), `hit` is a no-op comparison. See docs/executor.md#crash-safety.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping

ENV = "FIBRIC_CRASHPOINT"
POINTS = ("after_lease", "after_decision", "after_intent", "after_request_sent", "after_response",
          "after_receipt")


class Crashpoints:
    """The one armed point (if any), parsed from the environment once."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        spec = (os.environ if environ is None else environ).get(ENV, "").strip()
        point, _, capability = spec.partition("@")
        if point and point not in POINTS:
            raise ValueError(f"{ENV} must be one of {', '.join(POINTS)} (optionally @capability), "
                             f"not {spec!r}")
        self.point = point or None
        self.capability = capability or None

    def armed(self, point: str, capability: str | None = None) -> bool:
        return self.point == point and (self.capability is None or self.capability == capability)

    def hit(self, point: str, capability: str | None = None) -> None:
        """Die here, now, without cleanup, if this point is armed."""
        if self.armed(point, capability):
            os.kill(os.getpid(), signal.SIGKILL)
