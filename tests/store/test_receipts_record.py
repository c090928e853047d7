"""Receipts of record in the state store: per-tenant chains, append-only, applied once, whoever writes."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from fibric import errors, store
from fibric.store import chain_audit, receipt_store


def new_receipt(tenant_id: str, n: int = 0, **fields: object) -> receipt_store.NewReceipt:
    values: dict[str, object] = {
        "reseller_id": "rs_fibric", "tenant_id": tenant_id, "operator_id": "op_8f2a1c",
        "operator": "ship-risk", "capability": "orders.hold", "entity_key": f"order:SO-{n}",
        "idempotency_key": f"ship-risk:SO-{n}:hold", "decision": "ALLOW", "outcome": "applied",
        "rule": "orders.hold", "args": {"reason": "late", "n": n}, **fields,
    }
    return receipt_store.NewReceipt(**values)  # type: ignore[arg-type]


def test_each_tenant_numbers_and_chains_its_own_receipts(ledger: receipt_store.StoreLedger) -> None:
    a1 = ledger.append(new_receipt("t_a", 1))
    b1 = ledger.append(new_receipt("t_b", 1))
    a2 = ledger.append(new_receipt("t_a", 2, args={"tuple": (1, 2)}, detail={"order": "SO-2"}))
    assert [a1.seq, b1.seq, a2.seq] == [1, 2, 3]  # ledger-wide order, for pagination
    assert [a1.tenant_seq, b1.tenant_seq, a2.tenant_seq] == [1, 1, 2]
    assert a1.prev_hash == b1.prev_hash == receipt_store.GENESIS
    assert a2.prev_hash == a1.hash
    # What append returns is what a reader gets back, and its hash recomputes from it.
    assert ledger.get("t_a", a2.id) == a2
    assert a2.args == {"tuple": [1, 2]}
    assert receipt_store.chain_hash(dataclasses.asdict(a2)) == a2.hash
    assert ledger.heads() == {"t_a": 2, "t_b": 1}
    with pytest.raises(errors.NotFound):
        ledger.get("t_b", a2.id)  # another tenant's receipt reads as not found


@pytest.mark.parametrize("change", ["UPDATE receipts SET outcome = 'failed'", "DELETE FROM receipts"])
def test_the_database_itself_refuses_to_change_a_receipt(
    state: store.StateStore, ledger: receipt_store.StoreLedger, change: str
) -> None:
    written = ledger.append(new_receipt("t_a", 1))
    with pytest.raises(Exception, match="append-only"), state.backend.transaction(write=True) as cur:
        cur.execute(change)
    assert ledger.get("t_a", written.id) == written


def test_truncating_the_receipts_is_refused_on_postgresql(state: store.StateStore,
                                                          ledger: receipt_store.StoreLedger) -> None:
    if state.dialect != "postgresql":
        pytest.skip("TRUNCATE is PostgreSQL's; SQLite runs it as a DELETE, refused above")
    ledger.append(new_receipt("t_a", 1))
    with pytest.raises(Exception, match="append-only"), state.backend.transaction(write=True) as cur:
        cur.execute("TRUNCATE receipts")
    assert ledger.heads() == {"t_a": 1}


def test_a_key_is_applied_once_per_tenant(ledger: receipt_store.StoreLedger) -> None:
    first = ledger.append(new_receipt("t_a", 1))
    with pytest.raises(receipt_store.AlreadyApplied, match="ship-risk:SO-1:hold"):
        ledger.append(new_receipt("t_a", 1))
    # Other outcomes of the key, and the same key of another tenant, are fine.
    ledger.append(new_receipt("t_a", 1, decision="DEDUP", outcome="deduplicated"))
    ledger.append(new_receipt("t_a", 1, outcome="failed"))
    ledger.append(new_receipt("t_b", 1))
    assert ledger.applied("t_a", "ship-risk:SO-1:hold") == first
    assert [r.tenant_seq for r in ledger.list_receipts("t_a")] == [3, 2, 1]  # the refused one took no place


def test_bad_decisions_and_outcomes_are_refused_before_anything_is_written(
    ledger: receipt_store.StoreLedger,
) -> None:
    with pytest.raises(errors.PermanentError, match="decision"):
        ledger.append(new_receipt("t_a", decision="MAYBE"))
    with pytest.raises(errors.PermanentError, match="outcome"):
        ledger.append(new_receipt("t_a", outcome="done"))
    with pytest.raises(errors.PermanentError, match="not JSON"):
        ledger.append(new_receipt("t_a", args={"x": object()}))
    assert ledger.append(new_receipt("t_a")).tenant_seq == 1


def test_a_receipt_whose_transaction_rolls_back_takes_no_place_in_the_chain(
    state: store.StateStore, ledger: receipt_store.StoreLedger
) -> None:
    first = ledger.append(new_receipt("t_a", 1))
    with pytest.raises(RuntimeError), state.backend.transaction(write=True) as cur:
        receipt_store.append(cur, state.sql, new_receipt("t_a", 2))
        raise RuntimeError("the intent's completion failed")  # the receipt goes with it
    second = ledger.append(new_receipt("t_a", 3))
    assert (second.tenant_seq, second.prev_hash) == (2, first.hash)


def test_appends_from_two_stores_and_many_threads_keep_every_chain_whole(
    state: store.StateStore, store_location: str
) -> None:
    other = store.open_store(store_location)  # a second replica on the same database
    written: list[receipt_store.Receipt] = []
    lock = threading.Lock()
    failures: list[BaseException] = []

    def worker(ledger: receipt_store.StoreLedger, tenant: str, start: int) -> None:
        try:
            for n in range(start, start + 25):
                receipt = ledger.append(new_receipt(tenant, n))
                with lock:
                    written.append(receipt)
        except BaseException as e:  # reported below, not lost in the thread
            failures.append(e)

    ledgers = [receipt_store.StoreLedger(state), receipt_store.StoreLedger(other)]
    threads = [threading.Thread(target=worker, args=(ledgers[i % 2], f"t_{i % 3}", i * 100))
               for i in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        other.close()
    assert failures == []
    assert len(written) == 200 and sorted(r.seq for r in written) == sorted({r.seq for r in written})
    record = receipt_store.StoreLedger(state)
    results = chain_audit.verify(record, record.tenants())
    assert [(r.tenant_id, r.receipts, r.broken) for r in results] == [
        ("t_0", 75, None), ("t_1", 75, None), ("t_2", 50, None)]
