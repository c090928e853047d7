"""Helpers the CLI tests share: a small GitOps repo on disk, a runner, and a real server in a thread."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from fibric import cli

REGO = """package fibric.guard

import rego.v1

default decision := {"decision": "BLOCK", "rule": "default-deny"}

decision := {"decision": "ALLOW", "rule": "hold"} if {
\tinput.action.capability == "orders.hold"
}
"""

SPECS = {
    "policy.yaml": """\
apiVersion: fibric.io/v1
kind: Policy
metadata:
  name: guard
spec:
  rego_file: ../policies/guard.rego
  query: data.fibric.guard.decision
""",
    "connector.yaml": """\
apiVersion: fibric.io/v1
kind: Connector
metadata:
  name: magento
spec:
  display_name: Magento Orders
  transport:
    http:
      url: https://orders.example/mcp
  capabilities:
    orders.read: orders.read
    orders.hold: orders.hold
""",
    "operator.yaml": """\
apiVersion: fibric.io/v1
kind: Operator
metadata:
  name: ship-risk
  labels:
    team: ops
spec:
  capabilities: [orders.hold]
  policy: guard
  subscribes: [order.updated]
""",
    "webhook.yaml": """\
apiVersion: fibric.io/v1
kind: Webhook
metadata:
  name: ops-channel
spec:
  url: https://acme.example/hooks/fibric
  events: [plan.proposed]
""",
}


def write_repo(root: Path) -> Path:
    """A GitOps repo (specs/ and policies/) under `root`; returns the specs folder."""
    (root / "policies").mkdir(parents=True, exist_ok=True)
    (root / "policies" / "guard.rego").write_text(REGO)
    specs_dir = root / "specs"
    specs_dir.mkdir(exist_ok=True)
    for name, text in SPECS.items():
        (specs_dir / name).write_text(text)
    return specs_dir


def run(args: Sequence[str], env: dict[str, str | None] | None = None) -> Result:
    """The `fibric` command in-process; stdout and stderr are kept apart."""
    base: dict[str, str | None] = {"FIBRIC_URL": None, "FIBRIC_KEY": None, "FIBRIC_DATA_DIR": None,
                                   "FIBRIC_STORE": None, "FIBRIC_TIMEOUT": None}
    return CliRunner().invoke(cli.cli, list(args), env={**base, **(env or {})}, catch_exceptions=False)


def line_of(path: Path, needle: str) -> int:
    """1-based line of the first line of `path` containing `needle`."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def raw_rows(store_location: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows straight from the database behind a store (not through the store)."""
    if store_location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(store_location, autocommit=True) as conn:
            return list(conn.execute(sql).fetchall())
    with closing(sqlite3.connect(Path(store_location) / "state.db")) as conn:
        return conn.execute(sql).fetchall()


KEY = re.compile(r"sk_live_[0-9a-f]+")
