"""Model call records: every request an operator's run made to an LLM route, kept with its run and plan.

Why a model proposed what it did, and what it cost, must be answerable after
the fact: each attempt's request (the operator's `sensitive` event fields
masked), the provider's answer, finish reason, token usage, latency and error
are stored when the run finishes (fibric/controller/operator_runs.py). GET /v1/runs/{id}
shows a run's calls; an operator's `model_usage` counts them; the sealer copies
them into the auditors' ledger, where SQL reads them as `model_calls` beside
`receipts` (fibric/store/sealed.py).
docs/operators.md#model-call-records documents every column.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fibric import ids
from fibric.store import stamps
from fibric.store import state as state_module

FIELDS = ("id", "reseller_id", "tenant_id", "run_id", "operator_id", "plan_id", "route", "model", "mode",
          "attempt", "request", "answer", "http_status", "finish_reason", "prompt_tokens",
          "completion_tokens", "total_tokens", "latency_ms", "outcome", "error", "started_at")
_COLUMNS = ", ".join(FIELDS)
MAX_ERROR = 2000


@dataclass(frozen=True)
class StoredCall:
    id: str
    reseller_id: str
    tenant_id: str
    run_id: str
    operator_id: str
    plan_id: str | None
    route: str
    model: str
    mode: str
    attempt: int
    request: dict[str, Any]
    answer: Any
    http_status: int | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    latency_ms: float
    outcome: str
    error: str | None
    started_at: datetime


@dataclass(frozen=True)
class Usage:
    """An operator's model calls counted for cost: every attempt, the failed ones, the tokens."""

    calls: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


def record(
    state: state_module.StateStore, *, reseller_id: str, tenant_id: str, run_id: str, operator_id: str,
    plan_id: str | None, calls: Iterable[Mapping[str, Any]],
) -> list[str]:
    """Store a run's model calls (each a mapping of FIELDS but the ids); their new ids, in order."""
    rows, made = [], []
    for call in calls:
        call_id = ids.new_id("model_call")
        made.append(call_id)
        rows.append((call_id, reseller_id, tenant_id, run_id, operator_id, plan_id, call["route"],
                     call["model"], call["mode"], int(call["attempt"]),
                     _json(call["request"]), None if call["answer"] is None else _json(call["answer"]),
                     call["http_status"], call["finish_reason"], call["prompt_tokens"],
                     call["completion_tokens"], call["total_tokens"], float(call["latency_ms"]),
                     call["outcome"], None if call["error"] is None else str(call["error"])[:MAX_ERROR],
                     stamps.stamp(call["started_at"])))
    if rows:
        marks = ", ".join("?" for _ in FIELDS)
        with state.backend.transaction(write=True, durable=False) as cur:  # a record: its loss is harmless
            for row in rows:
                cur.execute(f"INSERT INTO model_calls ({_COLUMNS}) VALUES ({marks})", row)
    return made


def for_run(state: state_module.StateStore, tenant_id: str, run_id: str) -> list[StoredCall]:
    """The run's model calls, in the order they were made."""
    with state.backend.transaction(write=False) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM model_calls WHERE tenant_id = ? AND run_id = ?"
                    " ORDER BY attempt, started_at", (tenant_id, run_id))
        return [_call(row) for row in cur.fetchall()]


def usage(state: state_module.StateStore, tenant_id: str, operator_ids: Sequence[str]) -> dict[str, Usage]:
    """Each operator's calls, failures and tokens (operators without a call are absent)."""
    if not operator_ids:
        return {}
    marks = ", ".join("?" for _ in operator_ids)
    with state.backend.transaction(write=False) as cur:
        cur.execute(
            "SELECT operator_id, COUNT(*), SUM(CASE WHEN outcome = 'ok' THEN 0 ELSE 1 END),"
            " COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),"
            " COALESCE(SUM(total_tokens), 0)"
            f" FROM model_calls WHERE tenant_id = ? AND operator_id IN ({marks}) GROUP BY operator_id",
            (tenant_id, *operator_ids))
        return {row[0]: Usage(*(int(v) for v in row[1:])) for row in cur.fetchall()}


def unsealed(state: state_module.StateStore, limit: int) -> list[StoredCall]:
    """Records not yet sealed into the auditors' ledger (fibric/store/sealed.py), oldest first."""
    with state.backend.transaction(write=False) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM model_calls WHERE sealed_at IS NULL ORDER BY started_at, id"
                    " LIMIT ?", (limit,))
        return [_call(row) for row in cur.fetchall()]


def mark_sealed(state: state_module.StateStore, call_ids: Sequence[str]) -> None:
    """Note that these records are in the auditors' ledger (the sealer, after its lake commit)."""
    if not call_ids:
        return
    marks = ", ".join("?" for _ in call_ids)
    with state.backend.transaction(write=True, durable=False) as cur:  # lost: sealed again, skipped there
        cur.execute(f"UPDATE model_calls SET sealed_at = ? WHERE id IN ({marks})",
                    (stamps.stamp(datetime.now(UTC)), *call_ids))


def _json(value: Any) -> str:
    """Strict JSON text of a request or an answer; a provider's NaN or Infinity, which JSON has no
    words for (and the API and the lake would refuse), is kept as the text of what came."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:
        return json.dumps({"not_json": json.dumps(value, default=str)[:MAX_ERROR * 50]})


def _call(row: Any) -> StoredCall:
    values = dict(zip(FIELDS, row, strict=True))
    values["request"] = json.loads(values["request"])
    values["answer"] = json.loads(values["answer"]) if values["answer"] is not None else None
    values["started_at"] = datetime.fromisoformat(values["started_at"])
    values["latency_ms"] = float(values["latency_ms"])
    return StoredCall(**values)
