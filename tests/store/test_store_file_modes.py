"""The data dir is its owner's only: folders Fibric creates are 0700, files 0600.

The modes are set explicitly (fibric/store/filemodes.py), so they hold in any
process, not only under `fibric serve`'s umask: these tests run under the
common umask 022, which would otherwise give 0755 and 0644. What already
exists keeps its mode, with a warning for a data file others may read.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from served_process import RUNNING, Served

from fibric import store
from fibric.store import audit_sql, receipt_store, sealed, secretbox

KEY = re.compile(r"FIBRIC_KEY=(\S+)")


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    """The usual umask, under which a file created without a mode would be 0644."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def a_receipt(n: int = 0) -> receipt_store.NewReceipt:
    return receipt_store.NewReceipt(
        reseller_id="rs_fibric", tenant_id="t_1", operator_id="op_1", operator="ship-risk",
        capability="orders.hold", entity_key=f"order:{n}", idempotency_key=f"hold:{n}",
        decision="ALLOW", outcome="applied",
    )


def test_a_new_sqlite_store_is_private(tmp_path: Path) -> None:
    data = tmp_path / "deployment" / "data"
    state = store.open_store(data)
    try:
        state.create_tenant("acme", "rs_fibric")  # a write: the WAL and its index exist now
        assert mode(tmp_path / "deployment") == 0o700
        assert mode(data) == 0o700
        assert mode(data / "state.db") == 0o600
        sidecars = [data / "state.db-wal", data / "state.db-shm"]
        assert any(p.exists() for p in sidecars)
        for path in sidecars:
            if path.exists():
                assert mode(path) == 0o600, path
    finally:
        state.close()


def test_a_new_sealed_ledger_is_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    state = store.open_store(data)
    lake = sealed.SealedLedger(data)
    try:
        record = receipt_store.StoreLedger(state)
        record.append(a_receipt())
        assert len(sealed.seal_pending(record, lake)) == 1
        assert mode(data) == 0o700
        assert mode(data / sealed.CATALOG_FILE) == 0o600
        # DuckLake writes its Parquet files with the umask's mode: in-process, the private folder
        # guards them; under `fibric serve` the umask makes them 0600 too (below).
        assert mode(data / sealed.DATA_DIR) == 0o700
        path, _ = audit_sql.snapshot(lake)
        assert mode(path) == 0o600
        assert mode(path.parent) == 0o700
    finally:
        lake.close()
        state.close()


def test_the_secret_key_file_is_private(tmp_path: Path) -> None:
    key_file = tmp_path / "data" / secretbox.KEY_FILE
    box = secretbox.SecretBox(key_file=key_file)
    assert box.open(box.seal("whsec_x", "t_1"), "t_1") == "whsec_x"
    assert mode(key_file) == 0o600
    assert mode(key_file.parent) == 0o700
    assert [p.name for p in key_file.parent.iterdir()] == [secretbox.KEY_FILE]  # no temporary left


def test_what_exists_keeps_its_mode_and_a_shared_data_file_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An operator's choice (a backup group reading the data dir, say) is theirs to undo.
    data = tmp_path / "data"
    data.mkdir(mode=0o750)
    (data / "state.db").touch(mode=0o640)
    with caplog.at_level(logging.WARNING, logger="fibric.store"):
        state = store.open_store(data)
        state.close()
    assert mode(data) == 0o750
    assert mode(data / "state.db") == 0o640
    assert any(str(data / "state.db") in r.getMessage() and "0640" in r.getMessage()
               for r in caplog.records)


def test_fibric_serve_creates_a_private_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    served = Served(["--data-dir", str(data)], cwd=tmp_path)  # inherits umask 022 from this test
    try:
        running = served.wait_for(RUNNING)
        assert running is not None, served.text
        key = KEY.search(served.text)
        assert key is not None, served.text
        # A tenant's SQL reads the sealed ledger: its catalog is open by now.
        listed = httpx.post(running.group(1) + "/v1/receipts/query", timeout=20, json={"sql": "SELECT 1"},
                            headers={"Authorization": f"Bearer {key.group(1)}"})
        assert listed.status_code == 200, listed.text
        assert mode(data) == 0o700
        files = [p for p in data.rglob("*") if p.is_file()]
        assert {p.name for p in files} >= {"state.db", sealed.CATALOG_FILE}
        for path in files:
            assert mode(path) == 0o600, path
    finally:
        assert served.finish() == 0, served.text
