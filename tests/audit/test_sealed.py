"""The sealed ledger: receipts of record copied into DuckLake, each tenant's chain a prefix, exactly once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from audit_support import new_receipt, record_some, seal

from fibric import errors, store
from fibric.controller import sealer
from fibric.store import chain_audit, ledger_access, receipt_store, sealed


def test_each_tenants_receipts_are_sealed_in_chain_order_field_for_field(
    record: receipt_store.StoreLedger, data_lake: sealed.SealedLedger, acme: store.Tenant,
    globex: store.Tenant,
) -> None:
    record_some(record, [acme.id, globex.id], 5)
    assert seal(record, data_lake) == 10
    assert data_lake.marks() == record.heads() == {acme.id: 5, globex.id: 5}
    for tenant in (acme.id, globex.id):
        assert chain_audit.compare_sealed(record.chain(tenant), data_lake.rows(tenant)) == (5, None)
    assert seal(record, data_lake) == 0  # nothing new: nothing sealed twice


def test_sealing_resumes_from_the_lakes_own_marks_after_a_restart(
    record: receipt_store.StoreLedger, data_dir: Path, acme: store.Tenant
) -> None:
    record_some(record, [acme.id], 3)
    first = sealed.SealedLedger(data_dir)
    try:
        assert seal(record, first) == 3
    finally:
        first.close()
    record_some(record, [acme.id], 2, start=3)
    again = sealed.SealedLedger(data_dir)  # a new process: nothing in memory
    try:
        assert again.marks() == {acme.id: 3}
        assert seal(record, again) == 2
        assert [row[1] for row in again.rows(acme.id)] == [1, 2, 3, 4, 5]
    finally:
        again.close()


def test_a_gap_is_refused_and_what_is_sealed_is_skipped(
    record: receipt_store.StoreLedger, data_lake: sealed.SealedLedger, acme: store.Tenant
) -> None:
    written = record_some(record, [acme.id], 3)[acme.id]
    data_lake.marks()
    with pytest.raises(errors.PermanentError, match=r"would skip 1\.\.1"):
        data_lake.seal([written[1]])
    assert data_lake.count() == 0  # nothing of the refused batch
    assert data_lake.seal(written[:2]) == 2
    assert data_lake.seal(written) == 1  # the first two were sealed already
    assert data_lake.count() == 3


def test_each_tenants_files_are_its_own_partition(
    record: receipt_store.StoreLedger, data_lake: sealed.SealedLedger, acme: store.Tenant,
    globex: store.Tenant,
) -> None:
    for n in range(3):  # three passes: three files per tenant
        record_some(record, [acme.id, globex.id], 1, start=n)
        seal(record, data_lake)
    mine, theirs = data_lake.files(acme.id), data_lake.files(globex.id)
    assert len(mine) == len(theirs) == 3
    assert all(f"tenant_id={acme.id}" in f for f in mine)
    assert sorted(mine + theirs) == sorted(data_lake.files())
    assert data_lake.files("t_nobody") == []


def test_maintenance_merges_small_files_and_keeps_every_row(
    record: receipt_store.StoreLedger, data_lake: sealed.SealedLedger, acme: store.Tenant
) -> None:
    for n in range(12):
        record.append(new_receipt(acme.id, 100 + n))
        seal(record, data_lake)
    assert len(data_lake.files(acme.id)) == 12
    before = list(data_lake.rows(acme.id))
    data_lake.maintain(keep=timedelta(0))
    assert len(data_lake.files(acme.id)) == 1
    assert list(data_lake.rows(acme.id)) == before
    parquet = list((Path(data_lake.data_path)).rglob("*.parquet"))
    assert len(parquet) == 1  # the merged-away files are gone from disk too


def test_first_use_from_two_threads_at_once_opens_one_connection(
    record: receipt_store.StoreLedger, data_dir: Path, acme: store.Tenant
) -> None:
    record_some(record, [acme.id], 2)
    seal_first = sealed.SealedLedger(data_dir)
    try:
        barrier = threading.Barrier(2)
        failures: list[BaseException] = []

        def use(action: str) -> None:
            barrier.wait()
            try:
                seal(record, seal_first) if action == "seal" else seal_first.files(acme.id)
            except BaseException as e:
                failures.append(e)

        threads = [threading.Thread(target=use, args=(a,)) for a in ("seal", "files")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert failures == []
        assert seal_first.count() == 2
    finally:
        seal_first.close()


def test_the_holder_publishes_a_private_token_and_withdraws_it(
    data_lake: sealed.SealedLedger, data_dir: Path
) -> None:
    data_lake.marks()  # opens the catalog
    token = ledger_access.token_path(data_dir / sealed.CATALOG_FILE)
    assert token.stat().st_mode & 0o777 == 0o600
    assert ledger_access.check(data_lake.token, token.read_text())
    assert not ledger_access.check(data_lake.token, "guess")
    token.write_text("guess")  # rewriting the file grants nothing
    assert not ledger_access.check(data_lake.token, "guess")
    data_lake.close()
    assert not token.exists()


SEALER = """
import sys
from pathlib import Path
from fibric import store
from fibric.store import receipt_store, sealed

data = Path(sys.argv[1])
state = store.open_store(data)
record, lake = receipt_store.StoreLedger(state), sealed.SealedLedger(data)
while sealed.seal_pending(record, lake, batch=3):
    print("sealed", flush=True)
"""


def test_a_sealer_killed_mid_pass_leaves_a_prefix_and_the_next_one_finishes_exactly(
    local_state: store.StateStore, record: receipt_store.StoreLedger, data_dir: Path, acme: store.Tenant,
    globex: store.Tenant,
) -> None:
    record_some(record, [acme.id, globex.id], 150)
    process = subprocess.Popen([sys.executable, "-c", SEALER, str(data_dir)], stdout=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout is not None
        for _ in range(5):  # five passes committed, the sixth under way
            assert process.stdout.readline().strip() == "sealed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
    lake = sealed.SealedLedger(data_dir)
    try:
        marks = lake.marks()
        for tenant in (acme.id, globex.id):  # what got sealed is a prefix, each receipt once
            sealed_count, difference = chain_audit.compare_sealed(record.chain(tenant), lake.rows(tenant))
            assert difference is None and sealed_count == marks.get(tenant, 0)
        assert 15 <= sum(marks.values()) < 300  # killed part way
        seal(record, lake)
        for tenant in (acme.id, globex.id):
            assert chain_audit.compare_sealed(record.chain(tenant), lake.rows(tenant)) == (150, None)
    finally:
        lake.close()


def test_the_sealer_service_seals_soon_after_a_receipt_and_keeps_the_lag(
    record: receipt_store.StoreLedger, data_lake: sealed.SealedLedger, acme: store.Tenant
) -> None:
    async def scenario() -> None:
        service = sealer.Sealer(record, data_lake, interval=30.0)  # only a wake() seals in time
        await service.start()
        try:
            await asyncio.sleep(0.2)  # its first pass: nothing to seal
            record.append(new_receipt(acme.id, 1))
            service.wake()
            deadline = time.monotonic() + 10
            while data_lake.marks().get(acme.id) != 1:
                assert time.monotonic() < deadline, "not sealed within 10 s of wake()"
                await asyncio.sleep(0.02)
            assert service.sealed == 1 and len(service.lags) == 1 and 0 <= service.lags[0] < 10
        finally:
            await service.stop()

    asyncio.run(scenario())
