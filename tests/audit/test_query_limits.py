"""POST /v1/receipts/query under attack: answers bounded in rows and bytes, strict JSON for every type,
and few queries at once per tenant, all through the API on real DuckDB."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import pytest
from audit_support import client_of, fill, new_receipt, run, seal
from fastapi.testclient import TestClient

from fibric import store
from fibric.api import schemas
from fibric.api.routes import receipts
from fibric.store import audit_sql, receipt_store, sealed

CAP = audit_sql.MAX_RESPONSE_BYTES


def strict(content: bytes) -> Any:
    """json.loads that refuses NaN and the infinities, as strict parsers (JavaScript's, Go's) do."""
    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(content, parse_constant=refuse)


@pytest.fixture
def client(app: Any, local_state: store.StateStore, acme: store.Tenant) -> Iterator[TestClient]:
    with client_of(app, local_state, acme) as opened:
        yield opened


def ask(client: TestClient, sql: str, max_rows: int = 1000) -> tuple[Any, Any]:
    response = client.post("/v1/receipts/query", json={"sql": sql, "max_rows": max_rows})
    return response, strict(response.content)


def peak_rss_reset() -> int:
    """Reset this process's peak RSS (Linux's clear_refs) and return the current RSS, in KiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS")


def _status_kib(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1])


# --- bounded answers ---------------------------------------------------------------------


def test_a_gigabyte_query_comes_back_capped_fast_and_small(client: TestClient) -> None:
    before = peak_rss_reset()
    started = time.monotonic()
    response, body = ask(client, "SELECT repeat('x', 100000) AS x FROM range(10000)", max_rows=10_000)
    elapsed = time.monotonic() - started
    grown_mib = (_status_kib("VmHWM") - before) / 1024
    assert response.status_code == 200, response.text[:500]
    assert len(response.content) <= CAP
    assert len(response.content) + 100_003 > CAP  # one more row would not fit: cut at the cap, not before
    assert body["truncated"] is True and body["truncated_reason"] == "max_bytes"
    assert body["row_count"] == len(body["rows"]) == 41
    assert all(row == ["x" * 100_000] for row in body["rows"])
    assert elapsed < 5, elapsed  # the query was not run to its end
    assert grown_mib < 300, f"peak RSS grew {grown_mib:.0f} MiB"  # a GB-sized answer would grow it GBs


def test_many_small_rows_stop_at_max_rows_or_the_byte_cap_whichever_comes_first(client: TestClient) -> None:
    response, body = ask(client, "SELECT i FROM range(10) t(i)", max_rows=3)
    assert response.status_code == 200
    assert body["rows"] == [[0], [1], [2]]
    assert body["truncated"] is True and body["truncated_reason"] == "max_rows"
    _, body = ask(client, "SELECT i FROM range(3) t(i)", max_rows=3)  # exactly max_rows: nothing left out
    assert body["row_count"] == 3 and body["truncated"] is False and body["truncated_reason"] is None
    response, body = ask(client, "SELECT i, repeat('y', 1000) AS pad FROM range(100000) t(i)",
                         max_rows=10_000)
    assert len(response.content) <= CAP and body["truncated_reason"] == "max_bytes"
    assert [row[0] for row in body["rows"]] == list(range(body["row_count"]))  # the first rows, in order
    assert body["row_count"] > 3000


def test_a_row_larger_than_the_cap_is_left_out_not_sent(client: TestClient) -> None:
    response, body = ask(client, f"SELECT 1 AS n, repeat('x', {CAP}) AS big")
    assert response.status_code == 200
    assert body["rows"] == [] and body["row_count"] == 0
    assert body["truncated"] is True and body["truncated_reason"] == "max_bytes"
    assert [c["name"] for c in body["columns"]] == ["n", "big"]


class Recorded:
    """A locked-down DuckDB copy that notes how much text the rows it hands to Python carry."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.largest = 0  # characters of text in the largest row fetched
        self.fetched = 0  # ... and in all rows fetched

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)

    def execute(self, *args: Any) -> Recorded:
        self.conn.execute(*args)
        return self

    def fetchmany(self, size: int) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self.conn.fetchmany(size)
        for row in rows:
            text = sum(len(v) for v in row if isinstance(v, str))
            self.largest = max(self.largest, text)
            self.fetched += text
        return rows


@pytest.fixture
def copy() -> Iterator[Recorded]:
    conn = duckdb.connect()
    try:
        conn.execute("CREATE TABLE receipts AS SELECT 1 AS n")
        audit_sql.lock_down(conn)
        yield Recorded(conn)
    finally:
        conn.close()


def test_rows_past_the_byte_budget_never_reach_python(copy: Recorded) -> None:
    result = audit_sql.query(copy, "SELECT repeat('x', 10000000) AS big FROM range(3)")
    assert result.row_json == [] and result.truncated == "max_bytes"
    assert copy.largest == 0  # DuckDB held the 10 MB values; Python never saw one
    result = audit_sql.query(copy, "SELECT repeat('y', 1000) AS y FROM range(1000000)", max_rows=10_000)
    assert result.truncated == "max_bytes" and len(result.document()) <= CAP
    assert copy.fetched <= CAP  # not a batch more than fits


def test_a_column_list_over_the_byte_cap_is_refused_before_the_query_runs(copy: Recorded) -> None:
    sql = "SELECT * FROM " + ", ".join(f"range(1) t{n}(a_rather_long_column_name_{n})" for n in range(40))
    with pytest.raises(audit_sql.QueryRejected, match="40 columns alone take more than the 1000 bytes"):
        audit_sql.query(copy, sql, max_bytes=1000)
    assert copy.fetched == 0
    assert len(audit_sql.query(copy, sql, max_bytes=3000).document()) <= 3000


def test_the_copy_answers_in_utc_whatever_zone_it_started_in() -> None:
    conn = duckdb.connect()
    try:
        conn.execute("SET TimeZone = 'America/New_York'")
        conn.execute("CREATE TABLE receipts AS SELECT TIMESTAMP '2026-06-14 09:00:00' AS t")
        audit_sql.lock_down(conn)
        result = audit_sql.query(conn, "SELECT t::TIMESTAMPTZ AS utc, strftime(now(), '%z') AS zone "
                                       "FROM receipts")
    finally:
        conn.close()
    assert result.rows == [["2026-06-14T09:00:00Z", "+00"]]


def test_a_query_over_its_working_memory_is_a_400_saying_so(client: TestClient) -> None:
    response = client.post("/v1/receipts/query",
                           json={"sql": "SELECT string_agg(repeat('x', 1000), '') FROM range(1000000)"})
    assert response.status_code == 400, response.text[:300]
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and [f["field"] for f in error["fields"]] == ["sql"]
    assert f"more than {audit_sql.QUERY_MEMORY // 2**20} MiB of working memory" in error["message"]


def test_order_duplicate_names_and_trailing_comments_survive_the_wrapping(client: TestClient) -> None:
    _, body = ask(client, "SELECT i AS a, -i AS a FROM range(5000) t(i) ORDER BY i % 7, i DESC -- by week\n;",
                  max_rows=10_000)
    assert [c["name"] for c in body["columns"]] == ["a", "a"]
    assert body["rows"] == [[i, -i] for i in sorted(range(5000), key=lambda i: (i % 7, -i))]
    _, body = ask(client, "WITH t AS (SELECT 2 AS n UNION ALL SELECT 1) FROM t ORDER BY n LIMIT 1;")
    assert body["rows"] == [[1]]


def test_the_answer_is_the_documented_schema(app: Any, client: TestClient, record: receipt_store.StoreLedger,
                                             data_lake: sealed.SealedLedger, acme: store.Tenant) -> None:
    record.append(new_receipt(acme.id, 1))
    seal(record, data_lake)
    _, body = ask(client, "SELECT * FROM receipts", max_rows=1)
    assert set(body) == set(schemas.ReceiptQueryResult.model_fields)
    schemas.ReceiptQueryResult.model_validate(body)
    component = app.openapi()["components"]["schemas"]["ReceiptQueryResult"]
    reason = component["properties"]["truncated_reason"]
    assert {"max_rows", "max_bytes"} <= set(json.dumps(reason).replace('"', " ").split())
    assert "truncated_reason" in component["required"]


# --- every type as strict JSON -------------------------------------------------------------


def test_nan_and_the_infinities_are_strings_wherever_they_are(client: TestClient) -> None:
    response, body = ask(client, "SELECT 'nan'::DOUBLE AS a, 'inf'::DOUBLE AS b, '-inf'::FLOAT AS c, "
                                 "1.5::DOUBLE AS d, ['nan'::DOUBLE, 2.0] AS e, {'x': '-inf'::DOUBLE} AS f, "
                                 "MAP {'k': 'inf'::FLOAT} AS g")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert body["rows"] == [["NaN", "Infinity", "-Infinity", 1.5, ["NaN", 2.0], {"x": "-Infinity"},
                             {"k": "Infinity"}]]


TYPES = [  # (id, SQL expression, its JSON value, DuckDB's name for its type)
    ("timestamptz", "TIMESTAMPTZ '2026-06-14 11:02:11.5+02'", "2026-06-14T09:02:11.5Z",
     "TIMESTAMP WITH TIME ZONE"),
    ("timestamp", "TIMESTAMP '2026-06-14 09:02:11.123456'", "2026-06-14T09:02:11.123456", "TIMESTAMP"),
    ("timestamp_ns", "TIMESTAMP_NS '2026-06-14 09:02:11.123456789'", "2026-06-14T09:02:11.123456789",
     "TIMESTAMP_NS"),
    ("date", "DATE '2026-06-14'", "2026-06-14", "DATE"),
    ("time", "TIME '09:02:11'", "09:02:11", "TIME"),
    ("timetz", "TIMETZ '09:02:11+02'", "09:02:11+02", "TIME WITH TIME ZONE"),
    ("interval", "INTERVAL '1 month 2 days 3 hours'", "1 month 2 days 03:00:00", "INTERVAL"),
    ("decimal", "12345678901234567890.123456789::DECIMAL(38,9)", "12345678901234567890.123456789",
     "DECIMAL(38,9)"),
    ("decimal_scale", "1.10::DECIMAL(5,2)", "1.10", "DECIMAL(5,2)"),
    ("blob", "'\\x00\\xFFa'::BLOB", "00ff61", "BLOB"),
    ("uuid", "'ce3cf199-c56e-4c2b-8563-98e12911d5de'::UUID", "ce3cf199-c56e-4c2b-8563-98e12911d5de", "UUID"),
    ("hugeint", "170141183460469231731687303715884105727::HUGEINT", 170141183460469231731687303715884105727,
     "HUGEINT"),
    ("uhugeint", "340282366920938463463374607431768211455::UHUGEINT", 340282366920938463463374607431768211455,
     "UHUGEINT"),
    ("bignum", f"'{2**200}'::BIGNUM", str(2**200), "BIGNUM"),
    ("list", "[1, NULL, 3]", [1, None, 3], "INTEGER[]"),
    ("array", "[1.5, 2]::DOUBLE[2]", [1.5, 2.0], "DOUBLE[2]"),
    ("struct", "{'a': 1, 'b c': 'x', 'q\"': true}", {"a": 1, "b c": "x", 'q"': True},
     'STRUCT(a INTEGER, "b c" VARCHAR, "q""" BOOLEAN)'),
    ("row", "ROW(1, 'x')", [1, "x"], "STRUCT(INTEGER, VARCHAR)"),
    ("map", "MAP {DATE '2026-06-14': 1.5::DECIMAL(3,1), DATE '2026-06-15': NULL}",
     {"2026-06-14": "1.5", "2026-06-15": None}, "MAP(DATE, DECIMAL(3,1))"),
    ("nested", "[{'at': TIMESTAMPTZ '2026-06-14 09:02:11+00', 'b': 'a'::BLOB, 'd': [1.5::DECIMAL(3,1)], "
               "'m': MAP {'k': [INTERVAL 1 DAY]}}, NULL]",
     [{"at": "2026-06-14T09:02:11Z", "b": "61", "d": ["1.5"], "m": {"k": ["1 day"]}}, None],
     "STRUCT(\"at\" TIMESTAMP WITH TIME ZONE, b BLOB, d DECIMAL(3,1)[], m MAP(VARCHAR, INTERVAL[]))[]"),
    ("union", "union_value(k := TIMESTAMPTZ '2026-06-14 09:02:11+00')", "2026-06-14 09:02:11+00",
     "UNION(k TIMESTAMP WITH TIME ZONE)"),
    ("enum", "'b'::ENUM('a', 'b')", "b", "ENUM('a', 'b')"),
    ("json", "'{\"a\": [1]}'::JSON", '{"a": [1]}', "JSON"),
    ("text", "'é \"quoted\" \u2028 \\ tab\t'", 'é "quoted" \u2028 \\ tab\t', "VARCHAR"),
    ("null", "NULL", None, "INTEGER"),
]


@pytest.mark.parametrize(("sql", "value", "kind"), [t[1:] for t in TYPES], ids=[t[0] for t in TYPES])
def test_each_type_is_strict_json(client: TestClient, sql: str, value: Any, kind: str) -> None:
    response, body = ask(client, f"SELECT {sql} AS v")
    assert response.status_code == 200, response.text[:500]
    assert body["rows"] == [[value]]
    assert body["columns"][0]["type"] == kind


def test_now_and_receipts_times_need_no_python_time_zone_library(
    client: TestClient, record: receipt_store.StoreLedger, data_lake: sealed.SealedLedger, acme: store.Tenant
) -> None:
    receipt = record.append(new_receipt(acme.id, 1))
    seal(record, data_lake)
    _, body = ask(client, "SELECT now() AS now, disposed_at, disposed_at::TIMESTAMPTZ AS utc FROM receipts")
    now, disposed, utc = body["rows"][0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", now)
    assert disposed.startswith(receipt.at.strftime("%Y-%m-%dT%H:%M:%S"))
    assert utc == disposed + "Z"  # the copy's time zone is UTC, whatever the server's


# --- few queries at once -----------------------------------------------------------------


class Gate:
    """audit_sql.query_ledger for the test: `tenant`'s queries wait at the gate until it opens."""

    def __init__(self, tenant_id: str, real: Callable[..., Any]) -> None:
        self.tenant_id = tenant_id
        self.real = real
        self.entered = threading.Semaphore(0)
        self.open = threading.Event()

    def __call__(self, ledger: Any, tenant_id: str, sql: str, **kwargs: Any) -> Any:
        if tenant_id == self.tenant_id:
            self.entered.release()
            self.open.wait(30)
        return self.real(ledger, tenant_id, sql, **kwargs)


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch, acme: store.Tenant) -> Iterator[Gate]:
    gate = Gate(acme.id, audit_sql.query_ledger)
    monkeypatch.setattr(audit_sql, "query_ledger", gate)
    try:
        yield gate
    finally:
        gate.open.set()


def key_of(state: store.StateStore, tenant: store.Tenant) -> dict[str, str]:
    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    return {"Authorization": f"Bearer {secret}"}


def start(pool: ThreadPoolExecutor, client: TestClient, headers: dict[str, str] | None = None,
          sql: str = "SELECT count(*) FROM receipts") -> Future[Any]:
    return pool.submit(client.post, "/v1/receipts/query", json={"sql": sql}, headers=headers)


def test_a_tenant_over_its_concurrent_queries_gets_429_while_others_run(
    client: TestClient, local_state: store.StateStore, globex: store.Tenant, gate: Gate
) -> None:
    assert receipts.QUERIES_PER_TENANT == 2
    theirs = key_of(local_state, globex)
    with ThreadPoolExecutor(4) as pool:
        try:
            running = [start(pool, client), start(pool, client)]
            for _ in running:
                assert gate.entered.acquire(timeout=10), "the first two queries never started"
            refused = start(pool, client).result(timeout=5)  # answered at once, not queued behind the gate
            assert refused.status_code == 429, refused.text
            error = refused.json()["error"]
            assert error["code"] == "rate_limited" and "already runs 2 receipt queries" in error["message"]
            assert refused.headers["Retry-After"] == str(receipts.QUERY_RETRY_AFTER) == "1"
            assert refused.headers["Request-Id"] == error["request_id"]
            # Meanwhile another tenant's query, and this tenant's other reads, go on.
            other = start(pool, client, theirs).result(timeout=10)
            assert other.status_code == 200 and other.json()["rows"] == [[0]]
            assert client.get("/v1/receipts").status_code == 200
        finally:
            gate.open.set()
        assert [f.result(timeout=30).status_code for f in running] == [200, 200]
    assert client.post("/v1/receipts/query", json={"sql": "SELECT 1"}).status_code == 200  # slots given back


def test_failed_queries_give_their_slot_back(client: TestClient) -> None:
    for _ in range(receipts.QUERIES_PER_TENANT + 1):
        assert client.post("/v1/receipts/query", json={"sql": "SELECT nope"}).status_code == 400
    assert client.post("/v1/receipts/query", json={"sql": "SELECT 1"}).status_code == 200


def test_the_server_runs_at_most_its_own_number_of_queries(
    client: TestClient, local_state: store.StateStore, globex: store.Tenant, gate: Gate,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(receipts, "QUERIES_PER_SERVER", 1)  # read when the app's first query runs
    theirs = key_of(local_state, globex)
    with ThreadPoolExecutor(2) as pool:
        try:
            running = start(pool, client)
            assert gate.entered.acquire(timeout=10)
            refused = client.post("/v1/receipts/query", json={"sql": "SELECT 1"}, headers=theirs)
            assert refused.status_code == 429 and "server already runs 1 receipt queries" in refused.text
            assert refused.headers["Retry-After"] == "1"
        finally:
            gate.open.set()
        assert running.result(timeout=30).status_code == 200
    assert client.post("/v1/receipts/query", json={"sql": "SELECT 1"}, headers=theirs).status_code == 200


# --- the CLI, on the same function ---------------------------------------------------------


def test_the_cli_renders_the_same_values_locally(data_dir: Path, acme: store.Tenant) -> None:
    fill(data_dir, [acme.id], 2)
    query = "SELECT now() AS t, 'nan'::DOUBLE AS d, 1.10::DECIMAL(4,2) AS m, count(*) AS n FROM receipts"
    result = run(["audit", "sql", query, "--data-dir", str(data_dir), "--tenant", "acme", "-o", "json"])
    assert result.exit_code == 0, result.stderr
    [row] = strict(result.stdout.encode())
    assert row["t"].endswith("Z") and row["d"] == "NaN" and row["m"] == "1.10" and row["n"] == 2


def test_a_result_reads_back_from_its_document(client: TestClient) -> None:
    response, _ = ask(client, "SELECT i, 'nan'::DOUBLE AS d FROM range(5) t(i)", max_rows=2)
    result = audit_sql.Result.from_document(json.loads(response.content))
    assert result.document() == response.content
    assert result.rows == [[0, "NaN"], [1, "NaN"]] and result.truncated == "max_rows"
