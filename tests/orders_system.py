"""The example order system as the tests run it: a catalog entry, or a streamable HTTP server.

The example specs name it from the installation's connector catalog
(`transport: {catalog: orders}`), as a tenant's Connector must; each test
points the entry at its own orders database. `HttpOrders` runs the same
server over streamable HTTP in a subprocess.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from fibric import trust

ROOT = Path(__file__).resolve().parents[1]
ORDERS_SERVER = ROOT / "examples" / "mcp" / "orders_server.py"


def orders_catalog(orders_db: Path, scripts: Mapping[str, Path] | None = None) -> str:
    """The catalog file's text: `orders`, this interpreter running the example server on `orders_db`.

    `scripts` adds entries, each running one Python MCP server script with this interpreter.
    """
    # JSON strings are YAML strings, so any path is quoted safely.
    text = (
        "connectors:\n"
        "  orders:\n"
        "    stdio:\n"
        f"      command: {json.dumps(sys.executable)}\n"
        f"      args: [{json.dumps(str(ORDERS_SERVER))}]\n"
        f"      env: {{ORDERS_DB: {json.dumps(str(orders_db))}}}\n"
    )
    for name, script in (scripts or {}).items():
        command, args = json.dumps(sys.executable), json.dumps(str(script))
        text += f"  {name}:\n    stdio: {{command: {command}, args: [{args}]}}\n"
    return text


def seed_orders(db: Path, ids: Sequence[str]) -> None:
    """The example order system's database with these open, unscanned orders (and its own seed)."""
    spec = importlib.util.spec_from_file_location("seeded_orders_server", ORDERS_SERVER)
    assert spec is not None and spec.loader is not None
    server = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(server)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.executescript(server.SCHEMA)
        conn.executemany("INSERT INTO orders VALUES (?, 'open', 'Acme Bikes', 'ops@acme.example',"
                         " '2026-06-15', 0, NULL, '2026-06-14T08:58:00Z')", [(i,) for i in ids])
        conn.commit()


def write_orders_catalog(path: Path, orders_db: Path) -> Path:
    path.write_text(orders_catalog(orders_db), encoding="utf-8")
    return path


def orders_boundary(
    orders_db: Path, scripts: Mapping[str, Path] | None = None, **changes: object
) -> trust.Boundary:
    """A boundary whose catalog offers the example order server on `orders_db` (and `scripts`)."""
    catalog = trust.Catalog.parse(orders_catalog(orders_db, scripts), "catalog.yaml")
    return trust.Boundary(catalog=catalog, **changes)  # type: ignore[arg-type]


class HttpOrders:
    """The example order system serving streamable HTTP in a subprocess."""

    def __init__(self, db: Path, token: str | None = None) -> None:
        self.db = db
        self.token = token
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self.url = ""

    def start(self) -> None:
        env = {"PATH": os.environ["PATH"], "ORDERS_DB": str(self.db)}
        if self.token:
            env["ORDERS_TOKEN"] = self.token
        self.process = subprocess.Popen(
            [sys.executable, str(ORDERS_SERVER), "--http", str(self.port)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self.process.stderr is not None
        line = self.process.stderr.readline()  # the server prints its URL first, or dies
        found = re.search(r"(http://\S+)", line)
        if found is None:
            self.stop()
            raise RuntimeError(f"orders server did not start: {line!r}")
        self.url = found.group(1)
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            if self.process.stderr is not None:
                self.process.stderr.close()
            self.process = None
