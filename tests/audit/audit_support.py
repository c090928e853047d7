"""Helpers the audit tests share: receipts to record and seal, API clients, the CLI in-process."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from fibric import cli, settings, store
from fibric.store import receipt_store, sealed

CLEAN_ENV: dict[str, str | None] = {"FIBRIC_URL": None, "FIBRIC_KEY": None, "FIBRIC_DATA_DIR": None,
                                    "FIBRIC_STORE": None, "FIBRIC_TIMEOUT": None}


def new_receipt(tenant_id: str, n: int = 0, **fields: Any) -> receipt_store.NewReceipt:
    values: dict[str, Any] = {
        "reseller_id": "rs_fibric", "tenant_id": tenant_id, "operator_id": "op_8f2a1c",
        "operator": "ship-risk", "capability": "orders.hold", "entity_key": f"order:SO-{n}",
        "idempotency_key": f"ship-risk:SO-{n}:hold", "decision": "ALLOW", "outcome": "applied",
        "rule": "orders.hold", "args": {"reason": "late", "n": n}, **fields,
    }
    return receipt_store.NewReceipt(**values)


def record_some(record: receipt_store.StoreLedger, tenants: Sequence[str], per_tenant: int, *, start: int = 0,
                ) -> dict[str, list[receipt_store.Receipt]]:
    """`per_tenant` receipts of each tenant (entities start, start + 1, ...), interleaved, every third
    one a BLOCK."""
    written: dict[str, list[receipt_store.Receipt]] = {t: [] for t in tenants}
    for n in range(start, start + per_tenant):
        for tenant in tenants:
            decision, outcome = ("BLOCK", "refused") if n % 3 == 2 else ("ALLOW", "applied")
            written[tenant].append(record.append(new_receipt(tenant, n, decision=decision, outcome=outcome)))
    return written


def seal(record: receipt_store.StoreLedger, lake: sealed.SealedLedger) -> int:
    """Seal everything recorded so far, as the sealer's passes do; how many."""
    total = 0
    while batch := sealed.seal_pending(record, lake):
        total += len(batch)
    return total


def fill(data_dir: Path, tenants: Sequence[str], per_tenant: int) -> dict[str, list[receipt_store.Receipt]]:
    """The data dir's store and lake holding `per_tenant` receipts of each tenant, recorded and sealed,
    closed again (as a stopped server leaves them)."""
    with opened(data_dir) as (record, lake):
        written = record_some(record, tenants, per_tenant)
        seal(record, lake)
    return written


@contextlib.contextmanager
def opened(data_dir: Path) -> Iterator[tuple[receipt_store.StoreLedger, sealed.SealedLedger]]:
    """The data dir's receipts of record and its sealed ledger, closed after."""
    state = store.open_store(settings.StoreSettings(data_dir=data_dir).location)
    lake = sealed.SealedLedger(data_dir)
    try:
        yield receipt_store.StoreLedger(state), lake
    finally:
        lake.close()
        state.close()


def client_of(app: Any, state: store.StateStore, tenant: store.Tenant,
              scopes: frozenset[str] = frozenset(store.SCOPES)) -> TestClient:
    """A test client of `app` with a fresh API key of `tenant`."""
    _, secret = state.create_api_key(tenant.id, scopes)
    return TestClient(app, headers={"Authorization": f"Bearer {secret}"})


def run(args: Sequence[str], env: dict[str, str | None] | None = None) -> Result:
    """`fibric ...` in-process; stdout and stderr kept apart."""
    return CliRunner().invoke(cli.cli, list(args), env={**CLEAN_ENV, **(env or {})}, catch_exceptions=False)
