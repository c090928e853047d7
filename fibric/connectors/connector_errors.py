"""What a connector call can fail with, classed by what the executor does next.

Every class sits in the one tree of `fibric.errors`, so the API and CLI edges
convert them like any other. `in_doubt` is the fact the executor needs for
exactly-once effects: False means no request reached the server (safe to
retry); True means the server may have acted (retry only an idempotent tool,
with the same idempotency key, else record the action in doubt).
"""

from __future__ import annotations

from typing import TypeVar

from fibric import errors

E = TypeVar("E", bound=errors.FibricError)


class NotConnected(errors.TemporaryError):
    """No session to the connector's server right now; nothing was sent."""

    in_doubt = False


class TenantBusy(NotConnected):
    """The tenant already has its share of tool calls in flight (a bulkhead); nothing was sent."""


class CapabilityUnavailable(errors.Conflict):
    """Fail closed: the capability maps to no tool the server offers; nothing was sent.

    Raised for a capability no connector of the tenant maps, for a mapping to a
    tool the server does not list, and for a capability two connectors both
    claim. It clears only when the spec or the server changes.
    """

    in_doubt = False


class CallTimeout(errors.TemporaryError):
    """The server did not answer within the call's timeout; it may still act."""

    in_doubt = True


class CallFailed(errors.TemporaryError):
    """The session broke (the server died or became unreachable) mid-call.

    The next call gets a fresh session; whether this one took effect is unknown.
    """

    in_doubt = True


class ToolCallRejected(errors.PermanentError):
    """The server answered with a protocol error (unknown tool, invalid params): no effect."""

    in_doubt = False

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class InvalidToolResult(errors.PermanentError):
    """The tool ran but its result broke the protocol or its own output schema."""

    in_doubt = True


def retold(error: E, message: str) -> E:
    """`error` with `message` for its text: same class, same `delay`, `code` and `in_doubt`.

    How a connector hands an error to its tenant with the target's words
    withheld (trust.Grant.show_error), without changing what the caller does next.
    """
    told = type(error).__new__(type(error))
    told.__dict__.update(vars(error))
    told.args = (message,)
    return told
