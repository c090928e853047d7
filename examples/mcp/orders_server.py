"""The reference's order system as a real MCP server: orders.read, orders.hold, orders.notify.

Fibric's demo and tests drive this server exactly as they would a vendor's,
so it behaves like one: orders live in SQLite (the file named by ORDERS_DB),
every effect is written to an `effects` table, and a call that carries an
idempotency key in its request `_meta` (`fibric.io/idempotency_key`, what
Fibric's connectors send) takes effect once: the same key again returns the
first call's result without a second effect.

A tool finds its order from the `order_id` argument or, when that is absent,
from the `fibric.io/entity_key` in `_meta` (`order:SO-10884`), so an operator
rule can say just `orders.hold {reason: ...}` for the event's order.

    python examples/mcp/orders_server.py                # stdio
    python examples/mcp/orders_server.py --http 9000    # streamable HTTP on 127.0.0.1:9000/mcp

With `--http 0` the OS picks a free port; the first line on stderr always
reads `orders_server listening on http://HOST:PORT/mcp`. When ORDERS_TOKEN is
set, HTTP requests must carry `Authorization: Bearer <ORDERS_TOKEN>` (a
connector spec names the variable holding it in `bearer_token_env`).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

IDEMPOTENCY_KEY = "fibric.io/idempotency_key"
ENTITY_KEY = "fibric.io/entity_key"

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,                -- open | on_hold | shipped
    customer TEXT NOT NULL,
    owner TEXT NOT NULL,
    ship_by TEXT NOT NULL,
    carrier_scanned INTEGER NOT NULL,
    hold_reason TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS effects (     -- one row per effect that really happened
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tool TEXT NOT NULL,
    order_id TEXT NOT NULL,
    detail TEXT NOT NULL,
    idempotency_key TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency ( -- the first result per (tool, key), replayed on a repeat
    tool TEXT NOT NULL,
    key TEXT NOT NULL,
    args TEXT NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (tool, key)
);
"""

SEED = [
    ("SO-10884", "open", "Acme Bikes", "ops@acme.example", "2026-06-15", 0),
    ("SO-10885", "shipped", "Globex", "ops@globex.example", "2026-06-12", 1),
    ("SO-10886", "open", "Initech", "ops@initech.example", "2026-06-20", 1),
]


class Order(BaseModel):
    order_id: str
    status: str
    customer: str
    owner: str
    ship_by: str
    carrier_scanned: bool
    hold_reason: str | None


class OrderList(BaseModel):
    orders: list[Order]


class HoldResult(BaseModel):
    order_id: str
    status: str
    reason: str
    changed: bool = Field(description="False when the order was already on hold.")


class NotifyResult(BaseModel):
    order_id: str
    notification_id: int
    to: str
    message: str


# Tools run on worker threads. Their write transactions queue here rather than in SQLite's busy
# handler, which polls with sleeps of up to 100 ms: with calls arriving at once, that wait, not the
# work, would set the pace. (Another process writing the same file still waits in the handler.)
_WRITERS = threading.Lock()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _db_path() -> str:
    return os.environ.get("ORDERS_DB", "orders.db")


@contextmanager
def _connect() -> Iterator[sqlite3.Connection]:
    """One connection per call: tools run on worker threads, and SQLite serialises writers."""
    path = _db_path()
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        yield conn
    finally:
        conn.close()


def init_db() -> None:
    with _connect() as conn:
        conn.executescript(SCHEMA)
        conn.execute("BEGIN IMMEDIATE")
        if conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 0:
            conn.executemany(
                "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
                [(*row, _now()) for row in SEED],
            )
        conn.execute("COMMIT")


def _meta(ctx: Context) -> dict[str, Any]:
    return dict(ctx.request_context.meta or {})


def _order_id(order_id: str | None, ctx: Context) -> str:
    if order_id:
        return order_id
    entity = _meta(ctx).get(ENTITY_KEY)
    if isinstance(entity, str) and entity.startswith("order:") and len(entity) > len("order:"):
        return entity.removeprefix("order:")
    raise ToolError("order_id is required (or an 'order:<id>' entity key in _meta)")


def _row(conn: sqlite3.Connection, order_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
    if row is None:
        raise ToolError(f"no order '{order_id}'")
    return row


def _order(row: sqlite3.Row) -> Order:
    return Order(
        order_id=row["id"],
        status=row["status"],
        customer=row["customer"],
        owner=row["owner"],
        ship_by=row["ship_by"],
        carrier_scanned=bool(row["carrier_scanned"]),
        hold_reason=row["hold_reason"],
    )


def _effect(tool: str, ctx: Context, args: dict[str, Any], apply: Any) -> dict[str, Any]:
    """Run `apply(conn)` once per idempotency key, inside one write transaction.

    The key, the effect and its result commit together, so a crash leaves
    either all three or none, and a repeat of the key (even a concurrent one,
    which waits on SQLite's write lock) reads the stored result instead.
    """
    key = _meta(ctx).get(IDEMPOTENCY_KEY)
    if key is not None and not isinstance(key, str):
        raise ToolError(f"_meta '{IDEMPOTENCY_KEY}' must be a string")
    args_json = json.dumps(args, sort_keys=True)
    with _WRITERS, _connect() as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if key is not None:
                seen = conn.execute(
                    "SELECT args, result FROM idempotency WHERE tool = ? AND key = ?", (tool, key)
                ).fetchone()
                if seen is not None:
                    conn.execute("ROLLBACK")
                    if seen["args"] != args_json:
                        raise ToolError(f"idempotency key '{key}' was already used with other arguments")
                    return dict(json.loads(seen["result"]))
            result = dict(apply(conn, key))
            if key is not None:
                conn.execute(
                    "INSERT INTO idempotency VALUES (?, ?, ?, ?)",
                    (tool, key, args_json, json.dumps(result, sort_keys=True)),
                )
            conn.execute("COMMIT")
            return result
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def build_server() -> MCPServer:
    server = MCPServer(
        "orders",
        version="1.0.0",
        log_level="WARNING",
        instructions="The demo order system Fibric's examples act on.",
    )

    @server.tool(
        name="orders.read",
        description="Read orders: one order by id (or the event's order), else every order in a status.",
        annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False),
    )
    def read(
        ctx: Context,
        order_id: Annotated[str | None, Field(description="e.g. SO-10884")] = None,
        status: Annotated[str | None, Field(description="open, on_hold or shipped")] = None,
    ) -> OrderList:
        with _connect() as conn:
            if order_id is None and status is None and ENTITY_KEY not in _meta(ctx):
                rows = conn.execute("SELECT * FROM orders ORDER BY id").fetchall()
            elif status is not None and order_id is None:
                rows = conn.execute("SELECT * FROM orders WHERE status = ? ORDER BY id", (status,)).fetchall()
            else:
                rows = [_row(conn, _order_id(order_id, ctx))]
            return OrderList(orders=[_order(r) for r in rows])

    @server.tool(
        name="orders.hold",
        description="Put an order on hold so it is not shipped; holding a held order changes nothing.",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False
        ),
    )
    def hold(
        ctx: Context,
        reason: Annotated[str, Field(min_length=1, description="Why the order is held.")],
        order_id: Annotated[str | None, Field(description="Defaults to the event's order.")] = None,
    ) -> HoldResult:
        target = _order_id(order_id, ctx)

        def apply(conn: sqlite3.Connection, key: str | None) -> dict[str, Any]:
            row = _row(conn, target)
            if row["status"] == "shipped":
                raise ToolError(f"order '{target}' has already shipped")
            changed = row["status"] != "on_hold"
            if changed:
                conn.execute(
                    "UPDATE orders SET status = 'on_hold', hold_reason = ?, updated_at = ? WHERE id = ?",
                    (reason, _now(), target),
                )
                conn.execute(
                    "INSERT INTO effects (tool, order_id, detail, idempotency_key, created_at) "
                    "VALUES ('orders.hold', ?, ?, ?, ?)",
                    (target, reason, key, _now()),
                )
            held_for = reason if changed else row["hold_reason"]
            return HoldResult(
                order_id=target, status="on_hold", reason=held_for, changed=changed
            ).model_dump()

        return HoldResult.model_validate(
            _effect("orders.hold", ctx, {"order_id": target, "reason": reason}, apply)
        )

    @server.tool(
        name="orders.notify",
        description="Send a message about an order to a person (the order's owner by default).",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
        ),
    )
    def notify(
        ctx: Context,
        to: Annotated[str, Field(min_length=1, description="'owner' or an address.")] = "owner",
        message: Annotated[str | None, Field(description="Defaults to a note naming the order.")] = None,
        order_id: Annotated[str | None, Field(description="Defaults to the event's order.")] = None,
    ) -> NotifyResult:
        target = _order_id(order_id, ctx)
        args = {"order_id": target, "to": to, "message": message}

        def apply(conn: sqlite3.Connection, key: str | None) -> dict[str, Any]:
            row = _row(conn, target)
            address = row["owner"] if to == "owner" else to
            text = message or f"Order {target} ({row['customer']}) is {row['status']}."
            cursor = conn.execute(
                "INSERT INTO effects (tool, order_id, detail, idempotency_key, created_at) "
                "VALUES ('orders.notify', ?, ?, ?, ?)",
                (target, json.dumps({"to": address, "message": text}), key, _now()),
            )
            notification_id = int(cursor.lastrowid or 0)
            return NotifyResult(
                order_id=target, notification_id=notification_id, to=address, message=text
            ).model_dump()

        return NotifyResult.model_validate(_effect("orders.notify", ctx, args, apply))

    return server


def require_bearer(app: Any, token: str) -> Any:
    """ASGI middleware: 401 for an HTTP request without the bearer token."""
    expected = f"Bearer {token}".encode()

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != expected:
            await send(
                {"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]}
            )
            await send({"type": "http.response.body", "body": b"missing or wrong bearer token"})
            return
        await app(scope, receive, send)

    return guarded


def serve_http(server: MCPServer, host: str, port: int) -> None:
    """Serve streamable HTTP on a socket bound here, so `--http 0` can report the port it got."""
    import anyio
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    print(f"orders_server listening on http://{host}:{bound}/mcp", file=sys.stderr, flush=True)
    app = server.streamable_http_app(host=host)
    token = os.environ.get("ORDERS_TOKEN")
    config = uvicorn.Config(require_bearer(app, token) if token else app, log_level="warning", lifespan="on")
    anyio.run(lambda: uvicorn.Server(config).serve(sockets=[sock]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on PORT (0: any)")
    parser.add_argument("--host", default="127.0.0.1", help="address for --http (default 127.0.0.1)")
    options = parser.parse_args(argv)
    init_db()
    server = build_server()
    if options.http is None:
        server.run("stdio")
    else:
        serve_http(server, options.host, options.http)


if __name__ == "__main__":
    main()
