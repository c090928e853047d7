"""A real MCP server over streamable HTTP whose tool calls never answer: a tenant's hanging dependency.

It initializes and lists its tools like any server, so a connector to it
is `connected` and its capability resolves; then every `tools/call` of
`stall.hold` waits forever. `GET /inflight` (beside `/mcp`) answers how many
calls are waiting right now, so a test can tell the hang is really in flight.

    python stalled_mcp_server.py     # first line on stderr: stalled_mcp listening on http://127.0.0.1:PORT/mcp
"""

from __future__ import annotations

import socket
import sys
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

IN_FLIGHT = [0]

server = MCPServer("stalled", version="1.0.0", log_level="WARNING")


@server.tool(name="stall.hold", description="Put an order on hold (never answers).",
             annotations=ToolAnnotations(read_only_hint=False, idempotent_hint=False))
async def hold(reason: str = "") -> str:
    IN_FLIGHT[0] += 1
    try:
        await anyio.sleep_forever()
    finally:
        IN_FLIGHT[0] -= 1
    return "unreachable"


def with_counter(app: Any) -> Any:
    """ASGI: GET /inflight answers the number of calls waiting; everything else is the MCP app."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/inflight":
            body = str(IN_FLIGHT[0]).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return wrapped


def main() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    print(f"stalled_mcp listening on http://127.0.0.1:{port}/mcp", file=sys.stderr, flush=True)
    config = uvicorn.Config(with_counter(server.streamable_http_app(host="127.0.0.1")),
                            log_level="warning", lifespan="on")
    anyio.run(lambda: uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    main()
