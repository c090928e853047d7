"""An MCP server whose one tool takes a free-form map: a schema strict structured outputs cannot carry."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

server = MCPServer("labels", version="0.1.0", log_level="WARNING")


@server.tool(name="set", description="Set labels on an order.")
def set_labels(order_id: str, labels: dict[str, str]) -> str:
    return f"{order_id}: {len(labels)} labels"


if __name__ == "__main__":
    server.run("stdio")
