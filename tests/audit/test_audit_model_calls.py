"""Model call records in the auditors' ledger: sealed exactly once, per tenant, queryable beside receipts.

Auditors ask "what was the model asked, what did it answer, what did it
cost" with the same SQL they run over receipts: `model_calls` is a table of
the sealed ledger, a tenant sees only its own rows, and a sealing pass that
dies after its lake commit seals nothing twice.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from audit_support import new_receipt, opened, run, seal

from fibric import store
from fibric.store import audit_sql, model_calls, receipt_store, sealed

STARTED = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def call(n: int, outcome: str = "ok", tokens: int | None = 100) -> dict[str, Any]:
    return {
        "route": "gpt", "model": "gpt-test", "mode": "json_schema", "attempt": n,
        "request": {"model": "gpt-test", "messages": [{"role": "user", "content": f"run {n}"}]},
        "answer": {"choices": [{"finish_reason": "stop"}]} if outcome == "ok" else None,
        "http_status": 200 if outcome == "ok" else None, "finish_reason": "stop" if outcome == "ok" else None,
        "prompt_tokens": tokens, "completion_tokens": tokens and tokens // 10, "total_tokens": tokens,
        "latency_ms": 812.5, "outcome": outcome, "error": None if outcome == "ok" else "no answer within 60s",
        "started_at": STARTED + timedelta(seconds=n),
    }


def record_calls(state: store.StateStore, tenant: store.Tenant, run_id: str, calls: list[dict[str, Any]]
                 ) -> list[str]:
    return model_calls.record(state, reseller_id=tenant.reseller_id, tenant_id=tenant.id, run_id=run_id,
                              operator_id="op_8f2a1c", plan_id="pl_1", calls=calls)


def test_model_calls_are_sealed_once_and_each_tenant_queries_its_own(
    local_state: store.StateStore, record: receipt_store.StoreLedger, data_lake: sealed.SealedLedger,
    acme: store.Tenant, globex: store.Tenant,
) -> None:
    record_calls(local_state, acme, "run_a1", [call(1, "timeout", None), call(2)])
    record_calls(local_state, globex, "run_g1", [call(1)])
    record.append(new_receipt(acme.id, 1, run_id="run_a1"))
    seal(record, data_lake)

    assert sealed.seal_pending_calls(local_state, data_lake) == 3
    assert sealed.seal_pending_calls(local_state, data_lake) == 0  # noted as sealed in the store

    # A pass that dies after its lake commit, before the store notes it: the next one adds nothing.
    record_calls(local_state, acme, "run_a2", [call(3)])
    data_lake.seal_calls(model_calls.unsealed(local_state, 100))
    assert sealed.seal_pending_calls(local_state, data_lake) == 1  # seen again ...
    per_run = audit_sql.query_ledger(
        data_lake, acme.id, "SELECT run_id, count(*) AS calls, sum(total_tokens) AS tokens,"
        " count(*) FILTER (WHERE outcome <> 'ok') AS failures FROM model_calls"
        " GROUP BY run_id ORDER BY run_id")
    assert per_run.rows == [["run_a1", 2, 100, 1], ["run_a2", 1, 100, 0]]  # ... and sealed once

    # Joined to the receipts its run disposed of: what the model was asked, beside what ran.
    joined = audit_sql.query_ledger(
        data_lake, acme.id, "SELECT r.capability, m.attempt, m.outcome, m.request->>'model' AS model"
        " FROM receipts r JOIN model_calls m USING (run_id) ORDER BY m.attempt")
    assert joined.rows == [["orders.hold", 1, "timeout", "gpt-test"], ["orders.hold", 2, "ok", "gpt-test"]]
    theirs = audit_sql.query_ledger(data_lake, globex.id, "SELECT tenant_id, run_id FROM model_calls")
    assert theirs.rows == [[globex.id, "run_g1"]]


def test_an_empty_ledger_still_has_the_table(data_lake: sealed.SealedLedger, acme: store.Tenant) -> None:
    result = audit_sql.query_ledger(data_lake, acme.id, "SELECT count(*) FROM model_calls")
    assert result.rows == [[0]]


def test_the_local_admin_queries_model_calls_with_audit_sql(data_dir: Path, acme: store.Tenant,
                                                            globex: store.Tenant) -> None:
    with opened(data_dir) as (record, lake):  # then closed, as a stopped server leaves them
        record_calls(record.state, acme, "run_a1", [call(1), call(2)])
        record_calls(record.state, globex, "run_g1", [call(1)])
        assert sealed.seal_pending_calls(record.state, lake) == 3

    result = run(["audit", "sql", "SELECT tenant_id, count(*) AS calls FROM model_calls GROUP BY ALL",
                  "--data-dir", str(data_dir), "--tenant", "acme", "-o", "json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == [{"tenant_id": acme.id, "calls": 2}]


def test_the_documented_model_call_queries_run(
    local_state: store.StateStore, record: receipt_store.StoreLedger, data_lake: sealed.SealedLedger,
    acme: store.Tenant,
) -> None:
    record_calls(local_state, acme, "run_a1", [call(1)])
    record.append(new_receipt(acme.id, 1, run_id="run_a1"))
    seal(record, data_lake)
    sealed.seal_pending_calls(local_state, data_lake)
    doc = (Path(__file__).resolve().parents[2] / "docs" / "receipts.md").read_text()
    block = re.search(r"### Model call records\n.*?```sql\n(.*?)```", doc, re.S)
    assert block is not None
    queries = [q.strip() for q in block.group(1).split(";") if q.strip()]
    assert len(queries) == 2
    for query in queries:
        assert audit_sql.query_ledger(data_lake, acme.id, query).rows  # each finds the row


def test_a_lake_of_an_earlier_release_reads_as_no_model_calls_until_the_server_adds_the_table(
    data_dir: Path, acme: store.Tenant
) -> None:
    lake = sealed.SealedLedger(data_dir)
    try:
        lake._cursor().execute(f"DROP TABLE {sealed.CALLS_TABLE}")  # as a lake of an earlier release is
    finally:
        lake.close()
    old = sealed.SealedLedger(data_dir, read_only=True)
    try:
        assert old.files(acme.id, table="model_calls") == []
        assert audit_sql.query_ledger(old, acme.id, "SELECT count(*) FROM model_calls").rows == [[0]]
    finally:
        old.close()
    served = sealed.SealedLedger(data_dir)  # the server opens it writable: the table is added
    try:
        assert served.seal_calls([]) == 0 and served.files(table="model_calls") == []
        assert served._cursor().execute(f"SELECT count(*) FROM {sealed.CALLS_TABLE}").fetchone()[0] == 0
    finally:
        served.close()


def test_an_answer_json_has_no_words_for_is_kept_as_text_and_still_sealed(
    local_state: store.StateStore, data_lake: sealed.SealedLedger, acme: store.Tenant
) -> None:
    odd = {**call(1), "answer": {"choices": [], "usage": {"cost": float("nan")}}}
    [call_id] = record_calls(local_state, acme, "run_a1", [odd])
    [stored] = model_calls.for_run(local_state, acme.id, "run_a1")
    assert stored.id == call_id and stored.answer == {"not_json": '{"choices": [], "usage": {"cost": NaN}}'}
    assert sealed.seal_pending_calls(local_state, data_lake) == 1
    assert audit_sql.query_ledger(data_lake, acme.id, "SELECT count(*) FROM model_calls").rows == [[1]]
