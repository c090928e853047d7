"""A small MCP server whose behaviour tests switch on: slow calls, crashes, changing tools.

Run as a stdio server by the connector tests. `TOY_DESCRIPTION_FILE` names a
file whose text becomes the `echo` tool's description at start-up, so a test
can change a tool between sessions the way an update (or a poisoned tool)
would; `grow` changes the tool list of a running server and announces it
with notifications/tools/list_changed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, ToolAnnotations

READ_ONLY = ToolAnnotations(read_only_hint=True)


def description() -> str:
    path = os.environ.get("TOY_DESCRIPTION_FILE")
    return Path(path).read_text().strip() if path else "Echo the text back."


server = MCPServer("toy", version="0.1.0", log_level="WARNING")


@server.tool(name="echo", description=description(), annotations=READ_ONLY)
def echo(text: str) -> str:
    return text


@server.tool(name="slow", description="Sleep, then answer.", annotations=READ_ONLY)
async def slow(seconds: float) -> str:
    mark = os.environ.get("TOY_MARK_FILE")
    if mark:  # tells a test the call has reached the server
        Path(mark).write_text(str(os.getpid()))
    await anyio.sleep(seconds)
    return f"slept {seconds}"


@server.tool(name="whoami", description="This server's process id.", annotations=READ_ONLY)
def whoami() -> dict[str, int]:
    return {"pid": os.getpid()}


@server.tool(
    name="env", description="The names of this server's environment variables.", annotations=READ_ONLY
)
def env() -> dict[str, Any]:
    return {"names": sorted(os.environ), "path": os.environ.get("PATH")}


@server.tool(name="meta", description="The _meta of this request.", annotations=READ_ONLY)
def meta(ctx: Context) -> dict[str, Any]:
    return {"meta": {k: v for k, v in (ctx.request_context.meta or {}).items() if isinstance(v, str)}}


@server.tool(name="fail", description="A tool failure the model should read.")
def fail(message: str) -> str:
    raise ToolError(message)


@server.tool(name="reject", description="Answer with a JSON-RPC error instead of a result.")
def reject() -> str:
    raise MCPError(code=INVALID_PARAMS, message="order id must look like SO-<digits>")


@server.tool(name="crash", description="Exit the server process mid-call.")
def crash() -> str:
    os._exit(3)


@server.tool(name="grow", description="Add or redefine a tool, then announce the list changed.")
async def grow(ctx: Context, name: str, text: str) -> str:
    if name in {t.name for t in await server.list_tools()}:
        server.remove_tool(name)

    def added() -> str:
        return text

    server.add_tool(added, name=name, description=text, annotations=READ_ONLY)
    await ctx.session.send_tool_list_changed()
    return f"{name} defined"


if os.environ.get("TOY_EXIT_AFTER_LIST"):
    # A flapping server: it opens, lists its tools, and dies a moment later.
    import threading

    async def exit_after_list(ctx: Any, call_next: Any) -> Any:
        result = await call_next(ctx)
        if ctx.method == "tools/list":
            threading.Timer(0.2, os._exit, args=(4,)).start()
        return result

    server.middleware.append(exit_after_list)


if __name__ == "__main__":
    server.run("stdio")
