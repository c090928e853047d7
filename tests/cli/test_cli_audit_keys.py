"""`fibric audit keygen` and `checkpoint` at the command line: clear errors on bad paths, both stores.

A signing key's folder is the operator's to create (keygen never makes
one), and `checkpoint` takes `--store` like `verify`, so a PostgreSQL
installation is checkpointed and verified with the same flags.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_support import run

from fibric import store
from fibric.store import receipt_store


def location_args(store_location: str) -> list[str]:
    if store_location.startswith("postgresql://"):
        return ["--store", store_location]
    return ["--data-dir", store_location]


def test_keygen_into_a_missing_folder_names_it_and_creates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "no-such-folder" / "audit.key"
    result = run(["audit", "keygen", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert f"the folder {out.parent} does not exist" in result.stderr
    assert "Traceback" not in result.output
    assert not out.parent.exists()


def test_keygen_into_an_unwritable_folder_is_an_error_naming_the_file(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes through file modes")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        result = run(["audit", "keygen", "--out", str(locked / "audit.key")])
    finally:
        locked.chmod(0o700)
    assert result.exit_code == 2, result.output
    assert f"cannot write the key to {locked / 'audit.key'}: Permission denied" in result.stderr


def test_checkpoint_takes_store_like_verify_on_each_backend(
    store_location: str, state: store.StateStore, tenant: store.Tenant, tmp_path: Path
) -> None:
    record = receipt_store.StoreLedger(state)
    for n in range(3):
        record.append(receipt_store.NewReceipt(
            reseller_id="rs_fibric", tenant_id=tenant.id, operator_id="op_8f2a1c", operator="ship-risk",
            capability="orders.hold", entity_key=f"order:SO-{n}", idempotency_key=f"ship-risk:SO-{n}:hold",
            decision="ALLOW", outcome="applied", rule="orders.hold", args={"n": n}))
    key = tmp_path / "audit.key"
    assert run(["audit", "keygen", "--out", str(key)]).exit_code == 0
    where = location_args(store_location)
    out = tmp_path / "checkpoint.json"

    taken = run(["audit", "checkpoint", *where, "--key", str(key), "--out", str(out)])
    assert taken.exit_code == 0, taken.output
    assert f"tenant {tenant.id}: tenant_seq 3 " in taken.stdout
    [head] = json.loads(out.read_text())["tenants"]
    assert (head["tenant_id"], head["tenant_seq"]) == (tenant.id, 3)

    checked = run(["audit", "verify", *where, "--checkpoint", str(out), "--public-key", f"{key}.pub"])
    assert checked.exit_code == 0, checked.output
    assert f"ok      tenant {tenant.id}: 3 receipts" in checked.stdout


def test_checkpoint_into_a_missing_folder_names_it(
    store_location: str, state: store.StateStore, tenant: store.Tenant, tmp_path: Path
) -> None:
    key = tmp_path / "audit.key"
    assert run(["audit", "keygen", "--out", str(key)]).exit_code == 0
    out = tmp_path / "gone" / "checkpoint.json"
    where = location_args(store_location)
    result = run(["audit", "checkpoint", *where, "--key", str(key), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert f"cannot write the checkpoint to {out}: No such file or directory" in result.stderr
