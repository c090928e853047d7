"""A link: the two message streams of one MCP transport, and how it ended.

The SDK's ClientSession runs over a pair of streams; a link adds what the
connector supervisor needs and the streams do not tell: a `closed` event set
the moment the server is known gone (a stdio child exiting), and a sentence
saying why, for the connector's `last_error`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
from mcp.shared.message import SessionMessage

if TYPE_CHECKING:
    # The SDK's transport stream protocols (satisfied by anyio memory streams).
    from mcp.client._transport import ReadStream, WriteStream

STDERR_TAIL_LINES = 20


@dataclass(eq=False)
class Link:
    read: ReadStream[SessionMessage | Exception]
    write: WriteStream[SessionMessage]
    describe: str  # "stdio: python server.py" / "http: https://host/mcp", never a secret
    closed: anyio.Event = field(default_factory=anyio.Event)
    pid: int | None = None
    returncode: int | None = None
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))
    reason: str | None = None
    stopped: bool = False  # the transport has shut the server down
    stderr_done: anyio.Event = field(default_factory=anyio.Event)  # stderr reached EOF (or has none)
    on_close: list[Callable[[], None]] = field(default_factory=list)
    http_errors: list[str] = field(default_factory=list)  # "HTTP 401 Unauthorized from <url>"

    def close(self, reason: str) -> None:
        """Mark the link dead (the first reason wins) and tell whoever listens."""
        if self.reason is None:
            self.reason = reason
        if not self.closed.is_set():
            self.closed.set()
            for listener in self.on_close:
                listener()

    def explain(self) -> str | None:
        """Why the server went away, with its last stderr lines when there are any."""
        if self.reason is None and self.returncode is None:
            return self.http_errors[-1] if self.http_errors else None
        text = self.reason or f"server exited with code {self.returncode}"
        if self.stderr_tail:
            text += "; stderr: " + " | ".join(self.stderr_tail)
        return text
