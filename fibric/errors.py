"""One tree of errors, classed by what the caller should do next.

The core raises these; only the edges convert them: the API maps them to the
reference's error codes, the CLI to messages and exit codes.
"""

from __future__ import annotations

from dataclasses import dataclass


class FibricError(Exception):
    """Base of every error Fibric raises on purpose."""


@dataclass(frozen=True)
class SpecProblem:
    """One thing wrong with a spec, located as precisely as we can."""

    message: str
    path: str = ""  # field path, e.g. "spec.capabilities[1]"
    file: str | None = None
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
                if self.column is not None:
                    where += f":{self.column}"
            where += ": "
        field = f"{self.path}: " if self.path else ""
        return f"{where}{field}{self.message}"


class SpecInvalid(FibricError):
    """Input that can never succeed as given: fix it and resubmit."""

    def __init__(self, problems: list[SpecProblem] | SpecProblem | str) -> None:
        if isinstance(problems, str):
            problems = [SpecProblem(problems)]
        elif isinstance(problems, SpecProblem):
            problems = [problems]
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class NotFound(FibricError):
    """No such object for this tenant (another tenant's object included)."""


class Conflict(FibricError):
    """A state precondition failed; retrying unchanged will not help until state changes."""


class PolicyBlocked(FibricError):
    """A fail-closed policy refused the action."""


class TemporaryError(FibricError):
    """Something outside us failed; retry after `delay` seconds."""

    def __init__(self, message: str, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(FibricError):
    """Something failed in a way that retrying will not fix."""


class Unauthenticated(FibricError):
    """The caller's credentials are missing, malformed, unknown or revoked."""


class InsufficientScope(FibricError):
    """The caller is authenticated but lacks the scope this operation needs."""

    def __init__(self, scope: str) -> None:
        super().__init__(f"This API key lacks the '{scope}' scope.")
        self.scope = scope
