"""One open MCP session over one link, shared by every concurrent call to a connector.

Opening a session costs most of a second (a process start, the initialize
handshake); a call on an open one costs a couple of milliseconds. So a
connector keeps exactly one session and every call multiplexes over it.

The session is owned by the connector's supervisor task (the SDK's
ClientSession must be entered and exited in one task); callers in other
tasks only send requests on it. When the session ends under a call, the
supervisor aborts that call here, so it fails at once with CallFailed
instead of waiting out its timeout.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import anyio
from mcp import ClientSession, MCPError
from mcp import types as mcp_types

import fibric
from fibric.connectors import connector_errors, tools
from fibric.connectors import link as links

log = logging.getLogger(__name__)

CLIENT_INFO = mcp_types.Implementation(name="fibric", version=fibric.__version__)
MAX_TOOL_PAGES = 100  # a tools/list that never stops paginating must not hang a connect
TIMEOUT_GRACE_SECONDS = 1.0  # our own bound, past the SDK's per-request timeout


class SessionEnded(Exception):
    """The session could not open, or stopped; the message says why, for `last_error`."""


def describe_error(error: BaseException) -> str:
    """A one-line reason from an exception, unwrapping task-group exception groups."""
    if isinstance(error, BaseExceptionGroup):
        leaves = [describe_error(e) for e in error.exceptions]
        return "; ".join(dict.fromkeys(leaves))  # dedupe, keep order
    if isinstance(error, SessionEnded):
        return str(error)
    if isinstance(error, MCPError):
        return f"MCP error {error.code}: {error.message}"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class LiveSession:
    """An initialized ClientSession plus what the supervisor and callers need to know of it."""

    def __init__(self, link: links.Link, connector: str) -> None:
        self.link = link
        self.connector = connector
        self.wake = anyio.Event()  # the supervisor sleeps on this between pings
        self.refresh_requested = False  # the server said notifications/tools/list_changed
        self.check_requested = False  # a call timed out: is the server still there?
        self.server: dict[str, Any] = {}
        self._client: ClientSession | None = None
        self._broken: str | None = None
        self._inflight: set[anyio.CancelScope] = set()
        link.on_close.append(self._poke)

    def attach(self, client: ClientSession, result: mcp_types.InitializeResult) -> None:
        """The session is initialized: calls may use it."""
        self._client = client
        self.server = {
            "name": result.server_info.name,
            "version": result.server_info.version,
            "protocol_version": result.protocol_version,
        }

    @property
    def client(self) -> ClientSession:
        if self._client is None:
            raise SessionEnded("session is not initialized")
        return self._client

    @property
    def alive(self) -> bool:
        return self._broken is None and not self.link.closed.is_set()

    @property
    def end_reason(self) -> str:
        return self._broken or self.link.explain() or f"connection to {self.link.describe} lost"

    def mark_broken(self, reason: str) -> None:
        if self._broken is None:
            self._broken = reason
        self._poke()

    def _poke(self) -> None:
        self.wake.set()

    def renew_wake(self) -> None:
        self.wake = anyio.Event()

    def abort_calls(self) -> None:
        """Fail every call still waiting on this session (it has ended)."""
        for scope in list(self._inflight):
            scope.cancel()

    async def on_message(self, message: mcp_types.ServerNotification | Exception) -> None:
        """The SDK's message handler: notifications and transport errors from the server."""
        if isinstance(message, mcp_types.ToolListChangedNotification):
            self.refresh_requested = True
            self._poke()
        elif isinstance(message, Exception):
            log.warning("connector %s: transport error: %s", self.connector, describe_error(message))

    async def list_tools(self, timeout: float) -> list[tools.ToolInfo]:
        """Every tool, across pages, first definition of a name winning."""
        listed: dict[str, tools.ToolInfo] = {}
        cursor: str | None = None
        try:
            with anyio.fail_after(timeout):
                for _ in range(MAX_TOOL_PAGES):
                    params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
                    page = await self.client.list_tools(params=params)
                    for tool in page.tools:
                        listed.setdefault(tool.name, tools.ToolInfo.from_mcp(tool))
                    cursor = page.next_cursor
                    if not cursor:
                        return list(listed.values())
        except TimeoutError:
            raise SessionEnded(f"{self.link.describe}: no answer to tools/list within {timeout:g}s") from None
        raise SessionEnded(f"tools/list still paginating after {MAX_TOOL_PAGES} pages")

    async def ping(self, timeout: float) -> None:
        with anyio.fail_after(timeout):
            await self.client.send_ping()

    async def call(
        self, tool: str, arguments: dict[str, Any], meta: dict[str, Any], timeout: float, *, budget: float
    ) -> mcp_types.CallToolResult:
        """tools/call on this session, every failure mapped to a connector error.

        `timeout` is what is left of the caller's `budget` (the whole call's timeout, which
        errors name)."""
        if not self.alive:
            raise connector_errors.NotConnected(f"connector {self.connector}: {self.end_reason}", delay=0.0)
        scope = anyio.CancelScope()
        self._inflight.add(scope)
        try:
            with scope:
                return await self._call(tool, arguments, meta, timeout, budget)
        finally:
            self._inflight.discard(scope)
        # Only reached when abort_calls() cancelled the scope: the session ended under us.
        raise connector_errors.CallFailed(
            f"connector {self.connector}: {tool}: session lost mid-call: {self.end_reason}"
        )

    async def _call(
        self, tool: str, arguments: dict[str, Any], meta: dict[str, Any], timeout: float, budget: float
    ) -> mcp_types.CallToolResult:
        where = f"connector {self.connector}: {tool}"
        try:
            with anyio.fail_after(timeout + TIMEOUT_GRACE_SECONDS):
                return await self.client.call_tool(
                    tool,
                    arguments,
                    read_timeout_seconds=timeout,
                    meta=cast(mcp_types.RequestParamsMeta, meta),
                )
        except TimeoutError:
            self._timed_out()
            raise connector_errors.CallTimeout(f"{where}: no answer within {budget:g}s",
                                               delay=budget) from None
        except MCPError as e:
            if e.code == mcp_types.REQUEST_TIMEOUT:
                self._timed_out()
                raise connector_errors.CallTimeout(f"{where}: no answer within {budget:g}s",
                                                   delay=budget) from e
            if e.code == mcp_types.CONNECTION_CLOSED:
                await anyio.sleep(0)  # let the link record why it closed
                self.mark_broken(self.link.explain() or "connection closed")
                raise connector_errors.CallFailed(f"{where}: session lost mid-call: {self.end_reason}") from e
            raise connector_errors.ToolCallRejected(f"{where}: {describe_error(e)}", e.code) from e
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream, OSError) as e:
            self.mark_broken(describe_error(e))
            raise connector_errors.CallFailed(f"{where}: session lost mid-call: {self.end_reason}") from e
        except (RuntimeError, ValueError) as e:  # output-schema violations, malformed results
            raise connector_errors.InvalidToolResult(f"{where}: invalid result: {e}") from e

    def _timed_out(self) -> None:
        self.check_requested = True
        self._poke()


@asynccontextmanager
async def open_session(link: links.Link, connector: str, timeout: float) -> AsyncIterator[LiveSession]:
    """Initialize an MCP session over `link`; on exit, fail any call still in flight."""
    live = LiveSession(link, connector)
    async with ClientSession(
        link.read, link.write, message_handler=live.on_message, client_info=CLIENT_INFO
    ) as client:
        try:
            with anyio.fail_after(timeout):
                result = await client.initialize()
        except TimeoutError:
            raise SessionEnded(
                link.explain() or f"{link.describe}: no answer to initialize within {timeout:g}s"
            ) from None
        except MCPError as e:
            await anyio.sleep(0)
            raise SessionEnded(link.explain() or f"initialize failed: {describe_error(e)}") from e
        live.attach(client, result)
        link.http_errors.clear()  # they explained a failed open; this one succeeded
        try:
            yield live
        except Exception as e:
            live.mark_broken(describe_error(e))
            raise
        finally:
            live.mark_broken(live.end_reason)
            live.abort_calls()
