"""What the store's two databases spell differently (fibric/store/dialect.py), as the store relies on it.

Each test runs on both stores where the behaviour is shared (a failed
statement leaves the transaction usable, sequences only grow) and on
PostgreSQL alone where only it has the behaviour (row locks that other
replicas skip, a notification on commit, an election); SQLite instead
serializes every writer, and its one process neither notifies nor elects.
"""

from __future__ import annotations

import contextlib
import threading

import psycopg
import pytest

from fibric import store
from fibric.store import claims, leadership, outbox
from fibric.store import dialect as dialect_module

HEAD = "INSERT INTO receipt_heads (tenant_id, tenant_seq, hash) VALUES (?, 0, ?)"


def enqueue(state: store.StateStore, tenant: store.Tenant, count: int) -> None:
    with state.backend.transaction(write=True) as cur:
        for n in range(count):
            outbox.enqueue(cur, reseller_id=tenant.reseller_id, tenant_id=tenant.id, type="plan.proposed",
                           payload={"n": n})


def test_each_store_carries_the_dialect_its_name_says(state: store.StateStore) -> None:
    assert state.sql is dialect_module.named(state.dialect)
    assert state.sql.name == state.backend.dialect


def test_a_failed_statement_leaves_the_callers_transaction_usable(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    with state.backend.transaction(write=True) as cur:
        cur.execute(HEAD, (tenant.id, "a"))
        with pytest.raises(Exception, match=r"(?i)unique|duplicate"), state.sql.may_fail(cur, "twice"):
            cur.execute(HEAD, (tenant.id, "b"))
        cur.execute("UPDATE receipt_heads SET tenant_seq = 7 WHERE tenant_id = ?", (tenant.id,))
    with state.backend.transaction(write=False) as cur:
        cur.execute("SELECT tenant_seq, hash FROM receipt_heads WHERE tenant_id = ?", (tenant.id,))
        assert cur.fetchall() == [(7, "a")]  # the first row kept, the write after the failure committed


def test_the_next_value_only_grows_across_transactions(state: store.StateStore) -> None:
    drawn = []
    for _ in range(3):
        with state.backend.transaction(write=True) as cur:
            drawn.append(claims.next_token(cur, state.sql))
    assert drawn == sorted(set(drawn))


def test_two_replicas_claiming_outbox_events_at_once_take_disjoint_rows_without_waiting(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    if state.sql.skip_locked == "":
        pytest.skip("SQLite takes no row locks: BEGIN IMMEDIATE serializes every writer")
    enqueue(state, tenant, 4)
    first_took, release = threading.Event(), threading.Event()
    second: list[list[int]] = []

    def first_replica() -> None:  # holds its two rows until told to commit
        with state.backend.transaction(write=True) as cur:
            second.append([e.seq for e in outbox.claim(cur, state.sql, limit=2)])
            first_took.set()
            release.wait(10)

    holder = threading.Thread(target=first_replica)
    holder.start()
    try:
        assert first_took.wait(5)
        with state.backend.transaction(write=True) as cur:  # would block here without SKIP LOCKED
            second.append([e.seq for e in outbox.claim(cur, state.sql, limit=4)])
    finally:
        release.set()
        holder.join()
    held, taken = second
    assert len(held) == 2 and len(taken) == 2 and not set(held) & set(taken)


def test_a_locked_row_makes_another_writer_wait_for_the_commit(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    if state.sql.for_update == "":
        pytest.skip("SQLite takes no row locks: BEGIN IMMEDIATE serializes every writer")
    with state.backend.transaction(write=True) as cur:
        cur.execute(HEAD, (tenant.id, "a"))
    locked, seen = threading.Event(), []

    def reader() -> None:
        locked.wait(5)
        with state.backend.transaction(write=True) as cur:
            cur.execute(f"SELECT tenant_seq FROM receipt_heads WHERE tenant_id = ?{state.sql.for_update}",
                        (tenant.id,))
            seen.append(cur.fetchone()[0])

    waiter = threading.Thread(target=reader)
    waiter.start()
    with state.backend.transaction(write=True) as cur:
        cur.execute(f"SELECT tenant_seq FROM receipt_heads WHERE tenant_id = ?{state.sql.for_update}",
                    (tenant.id,))
        locked.set()
        waiter.join(0.5)
        assert waiter.is_alive() and seen == []  # waiting on the row
        cur.execute("UPDATE receipt_heads SET tenant_seq = 1 WHERE tenant_id = ?", (tenant.id,))
    waiter.join(5)
    assert seen == [1]  # read after the commit, not before it


def test_a_committed_enqueue_notifies_listeners_and_a_rolled_back_one_does_not(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    url = outbox.listen_url(state)
    if url is None:
        assert state.sql.notify is None
        pytest.skip("SQLite announces no commits: its dispatcher polls and is woken in-process")
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f"LISTEN {outbox.NOTIFY_CHANNEL}")
        senders: list[int] = []  # the channel is the database's: other stores' commits notify on it too
        for commit in (False, True):
            with contextlib.suppress(RuntimeError), state.backend.transaction(write=True) as cur:
                cur.execute("SELECT pg_backend_pid()")
                senders.append(cur.fetchone()[0])
                outbox.enqueue(cur, reseller_id=tenant.reseller_id, tenant_id=tenant.id,
                               type="plan.proposed", payload={})
                if not commit:
                    raise RuntimeError("rolled back")
        heard = [n.pid for n in listener.notifies(timeout=2) if n.pid in senders]
    assert heard == [senders[1]]  # once, for the commit; the rolled-back enqueue woke nobody


def test_replicas_of_one_store_elect_one_leader(state: store.StateStore) -> None:
    first = leadership.among_replicas(state.backend, "fibric-test")
    if first is None:
        pytest.skip("no replicas share a SQLite store: its one process leads alone")
    second = leadership.among_replicas(state.backend, "fibric-test")
    assert second is not None
    try:
        assert first.hold() == (True, True)
        assert second.hold() == (False, False)
        first.close()
        assert second.hold() == (True, True)
    finally:
        first.close()
        second.close()
