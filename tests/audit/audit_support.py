"""Helpers the audit tests share: receipts to append, API clients, the CLI in-process, raw DuckDB."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from fibric import cli, store
from fibric.store import receipts

CLEAN_ENV: dict[str, str | None] = {"FIBRIC_URL": None, "FIBRIC_KEY": None, "FIBRIC_DATA_DIR": None,
                                    "FIBRIC_STORE": None, "FIBRIC_TIMEOUT": None}


def new_receipt(tenant_id: str, n: int = 0, **fields: Any) -> receipts.NewReceipt:
    values: dict[str, Any] = {
        "reseller_id": "rs_fibric", "tenant_id": tenant_id, "operator_id": "op_8f2a1c",
        "operator": "ship-risk", "capability": "orders.hold", "entity_key": f"order:SO-{n}",
        "idempotency_key": f"ship-risk:SO-{n}:hold", "decision": "ALLOW", "outcome": "applied",
        "rule": "orders.hold", "args": {"reason": "late", "n": n}, **fields,
    }
    return receipts.NewReceipt(**values)


def fill(path: Path, tenants: Sequence[str], per_tenant: int) -> dict[str, list[receipts.Receipt]]:
    """A closed ledger at `path` holding `per_tenant` receipts of each tenant, interleaved."""
    ledger = receipts.Ledger(path)
    written: dict[str, list[receipts.Receipt]] = {t: [] for t in tenants}
    try:
        for n in range(per_tenant):
            for tenant in tenants:
                decision, outcome = ("BLOCK", "refused") if n % 3 == 2 else ("ALLOW", "applied")
                written[tenant].append(ledger.append(new_receipt(tenant, n, decision=decision,
                                                                 outcome=outcome)))
    finally:
        ledger.close()
    return written


def client_of(app: Any, state: store.StateStore, tenant: store.Tenant,
              scopes: frozenset[str] = frozenset(store.SCOPES)) -> TestClient:
    """A test client of `app` with a fresh API key of `tenant`."""
    _, secret = state.create_api_key(tenant.id, scopes)
    return TestClient(app, headers={"Authorization": f"Bearer {secret}"})


@contextlib.contextmanager
def raw(path: Path) -> Iterator[Any]:
    """The ledger file opened with plain duckdb, as someone tampering with it would."""
    conn = duckdb.connect(str(path))
    try:
        yield conn
    finally:
        conn.close()


def run(args: Sequence[str], env: dict[str, str | None] | None = None) -> Result:
    """`fibric ...` in-process; stdout and stderr kept apart."""
    return CliRunner().invoke(cli.cli, list(args), env={**CLEAN_ENV, **(env or {})}, catch_exceptions=False)
