"""POST /v1/receipts/query in killable worker processes: a value DuckDB's memory limit does not cover, or a
function call its interrupt does not stop, costs the worker, never the server, and the pool recovers."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from audit_support import client_of, new_receipt, seal
from fastapi.testclient import TestClient
from test_audit_serve import server  # noqa: F401 (a fixture: `fibric serve` as a subprocess)

from fibric import store
from fibric.api.routes import receipts
from fibric.store import audit_sql, query_worker, receipt_store, sealed

HUGE = "SELECT length(repeat('x', 1000000000)) AS n, repeat('y', 1000000000) AS y"  # 2 GB in two values
# One scalar call of about 5 s (an O(n*m) distance in O(n) memory): DuckDB's interrupt cannot land
# inside it, so only the kill stops it. A single long allocation is not slow enough on a fast CPU.
UNSTOPPABLE = "SELECT levenshtein(repeat('ab', 30000), repeat('ba', 30000)) AS n"


@pytest.fixture
def client(app: Any, local_state: store.StateStore, acme: store.Tenant) -> Iterator[TestClient]:
    with client_of(app, local_state, acme) as opened:
        yield opened


def ask(client: TestClient, sql: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    response = client.post("/v1/receipts/query", json={"sql": sql}, headers=headers)
    return response.status_code, response.json()


def pool_of(app: Any) -> query_worker.Pool:
    pool = app.state.query_workers
    assert isinstance(pool, query_worker.Pool)
    return pool


def vm_kib(field: str, pid: int | str = "self") -> int:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return int(next(line for line in lines if line.startswith(field)).split()[1])


def state_of(pid: int) -> str:
    """The process's state letter (R running, S sleeping, Z zombie), or "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return ""


def gone(pid: int) -> bool:
    return state_of(pid) in ("", "Z", "X")


def test_a_huge_value_is_a_400_in_time_and_the_server_does_not_grow(app: Any, client: TestClient) -> None:
    assert ask(client, "SELECT 1")[0] == 200  # the pool is up
    Path("/proc/self/clear_refs").write_text("5")  # reset this process's peak RSS (VmHWM)
    before = vm_kib("VmRSS")
    started = time.monotonic()
    status, body = ask(client, HUGE)
    elapsed = time.monotonic() - started
    grown_mib = (vm_kib("VmHWM") - before) / 1024
    assert status == 400, body
    error = body["error"]
    assert error["code"] == "invalid_request" and [f["field"] for f in error["fields"]] == ["sql"]
    assert error["message"].endswith(query_worker.over_memory(query_worker.PROCESS_MEMORY))
    assert elapsed < audit_sql.TIMEOUT + query_worker.GRACE, elapsed  # in-process: a minute and more
    assert grown_mib < 100, f"the server's peak RSS grew {grown_mib:.0f} MiB"  # in-process: ~2 GB
    status, body = ask(client, "SELECT 42 AS n")  # the next query works
    assert status == 200 and body["rows"] == [[42]]


def test_a_query_past_its_time_is_killed_at_the_budget_plus_grace(
    app: Any, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.state.query_workers = query_worker.Pool(receipts.QUERIES_PER_SERVER, grace=0.5)
    try:
        assert ask(client, "SELECT 1")[0] == 200  # workers started, out of the timing
        monkeypatch.setattr(audit_sql, "TIMEOUT", 0.5)
        pool = pool_of(app)
        before = set(pool.pids())
        started = time.monotonic()
        status, body = ask(client, UNSTOPPABLE)
        elapsed = time.monotonic() - started
        assert status == 400, body
        assert body["error"]["message"].endswith("query stopped: it ran longer than 0.5 s")
        assert pool.counters["killed"] == 1  # not answered by the worker's own interrupt: killed
        assert elapsed < 0.5 + 0.5 + 1.0, elapsed
        killed = before - set(pool.pids())
        assert len(killed) == 1
        deadline = time.monotonic() + 10
        while not all(gone(pid) for pid in killed) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(gone(pid) for pid in killed)
        monkeypatch.setattr(audit_sql, "TIMEOUT", 10.0)
        status, body = ask(client, "SELECT 2 AS n")  # the pool recovers
        assert status == 200 and body["rows"] == [[2]]
    finally:
        app.state.query_workers.close()


def test_interruptible_queries_still_stop_in_the_worker_and_keep_it(
    app: Any, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ask(client, "SELECT 1")[0] == 200
    monkeypatch.setattr(audit_sql, "TIMEOUT", 0.5)
    status, body = ask(client, "SELECT count(*) FROM range(1000000000000) a")
    assert status == 400 and body["error"]["message"].endswith("query stopped: it ran longer than 0.5 s")
    status, body = ask(client, "SELECT string_agg(repeat('x', 1000), '') FROM range(1000000)")
    assert status == 400 and "MiB of working memory" in body["error"]["message"]
    pool = pool_of(app)
    assert pool.counters["killed"] == pool.counters["died"] == 0  # DuckDB stopped both: no worker lost


def test_a_worker_found_dead_as_it_is_handed_a_query_is_not_the_querys_fault(
    app: Any, client: TestClient
) -> None:
    """A worker killed idle the moment before a query reaches it: the query runs on another."""
    assert ask(client, "SELECT 1")[0] == 200
    pool = pool_of(app)
    idle = pool.pids()
    for pid in idle:  # alive to the pool, but they will never take the query
        os.kill(pid, signal.SIGSTOP)

    def kill_once_handed() -> None:
        deadline = time.monotonic() + 10
        while not pool.busy() and time.monotonic() < deadline:
            time.sleep(0.005)
        for pid in idle:
            os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_once_handed)
    killer.start()
    status, body = ask(client, "SELECT 5 AS n")
    killer.join()
    assert status == 200 and body["rows"] == [[5]], body  # not "ran out of memory": it never ran
    assert pool.counters["died"] >= 1


def test_a_worker_that_dies_is_replaced(app: Any, client: TestClient) -> None:
    assert ask(client, "SELECT 1")[0] == 200
    pool = pool_of(app)
    for pid in pool.pids():  # idle workers die (the OOM killer, an operator's kill)
        os.kill(pid, signal.SIGKILL)
    status, body = ask(client, "SELECT 3 AS n")
    assert status == 200 and body["rows"] == [[3]]
    assert pool.counters["died"] >= 1

    deadline = time.monotonic() + 30
    while len(pool.pids()) < query_worker.WARM:
        assert time.monotonic() < deadline, "no replacements"
        time.sleep(0.05)
    busy: list[int] = []

    def kill_the_busy_one() -> None:  # mid-query: the tenant is told, and the next query works
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for pid in pool.busy():
                busy.append(pid)
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_the_busy_one)
    killer.start()
    status, body = ask(client, UNSTOPPABLE)
    killer.join()
    assert busy and status == 400, body
    assert body["error"]["message"].endswith(query_worker.over_memory(query_worker.PROCESS_MEMORY))
    status, body = ask(client, "SELECT 4 AS n")
    assert status == 200 and body["rows"] == [[4]]


def test_the_lock_down_holds_inside_the_worker(app: Any, client: TestClient, data_dir: Path,
                                               record: receipt_store.StoreLedger,
                                               data_lake: sealed.SealedLedger, acme: store.Tenant) -> None:
    record.append(new_receipt(acme.id, 1))
    seal(record, data_lake)
    settings = ("threads", "TimeZone", "enable_external_access", "lock_configuration", "temp_directory")
    listed = ", ".join(f"current_setting('{name}')" for name in settings)
    status, body = ask(client, f"SELECT {listed}, count(*) AS n FROM receipts")
    assert status == 200, body
    assert body["rows"] == [[1, "UTC", False, True, "", 1]]
    for sql in (f"SELECT count(*) FROM read_parquet('{data_dir}/ledger/**/*.parquet')",
                "SELECT * FROM read_csv('/etc/passwd')", f"SELECT * FROM glob('{data_dir}/*')",
                "SELECT * FROM read_text('/proc/self/environ')"):
        status, body = ask(client, sql)
        assert status == 400 and "file system operations are disabled" in body["error"]["message"], body
    assert all(pid != os.getpid() for pid in pool_of(app).pids())


def test_concurrent_queries_each_get_a_worker_and_the_burst_ones_go_again(
    app: Any, client: TestClient, local_state: store.StateStore, globex: store.Tenant
) -> None:
    _, secret = local_state.create_api_key(globex.id, frozenset(store.SCOPES))
    theirs = {"Authorization": f"Bearer {secret}"}
    slow = "SELECT count(*) AS n FROM range(200000000)"
    with ThreadPoolExecutor(4) as threads:
        answers = list(threads.map(lambda headers: ask(client, slow, headers), [None, None, theirs, theirs]))
    assert answers == [(200, answers[0][1])] * 4 and answers[0][1]["rows"] == [[200_000_000]]
    pool = pool_of(app)
    assert pool.counters["started"] <= receipts.QUERIES_PER_SERVER
    assert len(pool.pids()) == query_worker.WARM  # the burst's extra workers were let go


def test_the_workers_stop_with_the_app(app: Any, local_state: store.StateStore, acme: store.Tenant) -> None:
    with client_of(app, local_state, acme) as client:
        assert ask(client, "SELECT 1")[0] == 200
        pids = pool_of(app).pids()
        assert len(pids) == query_worker.WARM
    assert app.state.query_workers is None
    assert all(gone(pid) for pid in pids)
    with client_of(app, local_state, acme) as client:  # a new start makes a new pool
        status, body = ask(client, "SELECT 5 AS n")
        assert status == 200 and body["rows"] == [[5]]


def test_a_served_server_stays_small_and_stops_its_workers_with_it(
    server: tuple[subprocess.Popen[str], str], local_state: store.StateStore, acme: store.Tenant  # noqa: F811
) -> None:
    process, url = server
    _, key = local_state.create_api_key(acme.id, frozenset(store.SCOPES))
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.post(f"{url}/v1/receipts/query", json={"sql": "SELECT 1"}, headers=headers,
                      timeout=30).status_code == 200
    Path(f"/proc/{process.pid}/clear_refs").write_text("5")  # reset the server's peak RSS
    before = vm_kib("VmRSS", process.pid)
    response = httpx.post(f"{url}/v1/receipts/query", json={"sql": HUGE}, headers=headers, timeout=30)
    assert response.status_code == 400, response.text
    grown_mib = (vm_kib("VmHWM", process.pid) - before) / 1024
    assert grown_mib < 100, f"the server's peak RSS grew {grown_mib:.0f} MiB"
    workers = [pid for pid in children(process.pid)
               if b"query_worker" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(workers) == query_worker.WARM
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert all(gone(pid) for pid in workers)


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_an_app_never_started_leaves_no_workers_behind(app: Any, local_state: store.StateStore,
                                                       acme: store.Tenant) -> None:
    client = client_of(app, local_state, acme)  # no `with`: the lifespan never runs, nothing closes the pool
    assert ask(client, "SELECT 1")[0] == 200
    pids = pool_of(app).pids()
    assert len(pids) == query_worker.WARM
    del app.state.query_workers, app, client
    gc.collect()
    deadline = time.monotonic() + 10
    while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(gone(pid) for pid in pids)


def test_the_docs_state_the_limits_the_code_has() -> None:
    text = " ".join((Path(__file__).parents[2] / "docs" / "receipts.md").read_text().split())
    assert f"capped at {query_worker.PROCESS_MEMORY // 2**20} MiB" in text
    assert f"{query_worker.GRACE:g} s after the query's {audit_sql.TIMEOUT:g} s" in text
    assert f"{query_worker.WARM} workers are kept started" in text.replace("two workers", "2 workers")
