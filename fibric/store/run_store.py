"""Operator runs: one row per run, and the single-flight lease that keeps one run per entity at a time.

A run starts by taking the lease on (tenant, operator, entity_key), a claim
(claims.py, kind RUN: an insert that only one claimant can make), then, in the same
transaction, binds every queued event of that key (fibric/store/routing_store.py)
to itself and writes its `running` row. Events that arrive while it runs
stay unbound and are all taken by the next run: a flood makes one run at a
time, each over everything that piled up meanwhile. `finish` records the
outcome, drops the consumed queue rows and releases the lease in one
transaction.

A lease expires after `lease_seconds`; a run whose process died is found by
`reap` (or by the next claimant of its key), marked failed as interrupted,
and its events are unbound so the next run takes them again. Scheduled runs
hold the lease of the empty entity key ("" never names an event's entity).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fibric import errors, ids, timefmt
from fibric.store import claims, outbox, pages, stamps, views
from fibric.store import state as state_module

STATUSES = ("running", "succeeded", "failed")
TRIGGERS = ("event", "schedule")
SCHEDULE_KEY = ""  # the lease key of an operator's scheduled runs
DEFAULT_LEASE_SECONDS = 300.0
DEFAULT_MAX_EVENTS = 500  # per run; the rest wait for the next run
MAX_ERROR = 2000
INTERRUPTED = "interrupted: the process running it stopped before the run finished"
_COLUMNS = (
    "seq, id, reseller_id, tenant_id, operator_id, operator, entity_key, trigger, status, event_ids,"
    " sensed, proposed, applied, plan_id, proposed_by, error, started_at, finished_at"
)


@dataclass(frozen=True)
class Run:
    seq: int
    id: str
    reseller_id: str
    tenant_id: str
    operator_id: str
    operator: str  # the operator's name when the run started
    entity_key: str  # "" for a scheduled run
    trigger: str  # event | schedule
    status: str  # running | succeeded | failed
    event_ids: list[str]  # oldest first
    sensed: int  # events + items read through `sense` capabilities
    proposed: int  # actions the model proposed
    applied: int  # actions the executor applied (add_applied)
    plan_id: str | None
    proposed_by: str | None
    error: str | None
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class Outcome:
    """What a finished run reports (`finish`)."""

    status: str
    sensed: int = 0
    proposed: int = 0
    plan_id: str | None = None
    proposal_digest: str | None = None  # over the proposed actions, for dedup against open plans
    proposed_by: str | None = None
    error: str | None = None


def start(
    state: state_module.StateStore,
    *,
    reseller_id: str,
    tenant_id: str,
    operator_id: str,
    operator: str,
    entity_key: str,
    trigger: str,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    max_events: int = DEFAULT_MAX_EVENTS,
    now: datetime | None = None,
) -> Run | None:
    """Take the key's lease and start a run over its queued events; None if the key is busy or idle.

    An event-triggered run with no queued events to take does not start (its
    events went into someone else's run). Blocking.
    """
    if trigger not in TRIGGERS:
        raise errors.PermanentError(f"a run's trigger is one of {TRIGGERS}, not {trigger!r}")
    run_id = ids.new_id("run")
    with state.backend.transaction(write=True, durable=False) as cur:  # see backends.transaction
        key = (tenant_id, operator_id, entity_key)
        held = claims.current(cur, state.sql, claims.RUN, key, lock=True)
        # The database's clock (leases are compared across replicas), read once the lease row is
        # ours to judge: a start that waited for the write lock (SQLite) or the row lock
        # (PostgreSQL) must not be stamped before the finish of the run it waited for.
        moment = now or stamps.db_now(cur, state.sql)
        if held is not None:
            if held.expires_at > moment:
                return None
            _interrupt(cur, tenant_id, held.holder, moment)
        if claims.take(cur, state.sql, claims.RUN, key, run_id, lease_seconds, now=moment) is None:
            return None  # another claimant took it first
        if held is None and now is None:
            # No row to lock meant nothing held us back between the read of the clock and the
            # take: a whole run of another replica may have started and finished in that gap
            # (a descheduled process). The run starts now, after whatever the take waited for.
            moment = stamps.db_now(cur, state.sql)
        event_ids: list[str] = []
        if trigger == "event":
            cur.execute(
                "UPDATE run_queue SET run_id = ? WHERE seq IN (SELECT seq FROM run_queue"
                " WHERE tenant_id = ? AND operator_id = ? AND entity_key = ? AND run_id IS NULL"
                " ORDER BY seq LIMIT ?)",
                (run_id, *key, max_events),
            )
            cur.execute("SELECT event_id FROM run_queue WHERE run_id = ? ORDER BY seq", (run_id,))
            event_ids = [r[0] for r in cur.fetchall()]
            if not event_ids:
                claims.release(cur, claims.RUN, key, run_id)
                return None
        cur.execute(
            "INSERT INTO runs (id, reseller_id, tenant_id, operator_id, operator, entity_key, trigger,"
            " status, event_ids, sensed, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)",
            (run_id, reseller_id, tenant_id, operator_id, operator, entity_key, trigger,
             json.dumps(event_ids), len(event_ids), stamps.stamp(moment)),
        )
        return _read(cur, tenant_id, run_id)


def finish(state: state_module.StateStore, run: Run, outcome: Outcome, *, now: datetime | None = None) -> Run:
    """Record the run's outcome, drop the events it consumed, release its lease, and announce a
    failure (`run.failed`) in the same transaction. Blocking.

    A run that was meanwhile reaped as interrupted keeps that verdict (its
    events already went back to the queue); its lease is not touched.
    """
    if outcome.status not in ("succeeded", "failed"):
        raise errors.PermanentError(f"a finished run succeeded or failed, not {outcome.status!r}")
    with state.backend.transaction(write=True, durable=False) as cur:  # see backends.transaction
        moment = now or stamps.db_now(cur, state.sql)  # inside: see start()
        cur.execute(
            "UPDATE runs SET status = ?, sensed = ?, proposed = ?, plan_id = ?, proposal_digest = ?,"
            " proposed_by = ?, error = ?, finished_at = ?"
            " WHERE tenant_id = ? AND id = ? AND status = 'running'",
            (outcome.status, outcome.sensed, outcome.proposed, outcome.plan_id, outcome.proposal_digest,
             outcome.proposed_by, _clip(outcome.error), stamps.stamp(moment), run.tenant_id, run.id),
        )
        finished = cur.rowcount == 1
        if finished:
            cur.execute("DELETE FROM run_queue WHERE run_id = ?", (run.id,))
            claims.release(cur, claims.RUN, (run.tenant_id, run.operator_id, run.entity_key), run.id)
        done = _read(cur, run.tenant_id, run.id)
        if finished and done.status == "failed":  # a person may need to look: the operator did not propose
            outbox.enqueue(cur, reseller_id=run.reseller_id, tenant_id=run.tenant_id, type="run.failed",
                           payload=views.run(done))
        return done


def release(state: state_module.StateStore, run: Run, reason: str = INTERRUPTED) -> None:
    """Give up a run unfinished (shutdown): failed with `reason`, its events back in the queue. Blocking."""
    with state.backend.transaction(write=True) as cur:
        _interrupt(cur, run.tenant_id, run.id, stamps.db_now(cur, state.sql), reason)
        claims.release(cur, claims.RUN, (run.tenant_id, run.operator_id, run.entity_key), run.id)


def reap(state: state_module.StateStore, *, now: datetime | None = None) -> list[str]:
    """Fail the runs whose lease expired (their process died) and requeue their events; their ids."""
    reaped = []
    with state.backend.transaction(write=True) as cur:
        moment = now or stamps.db_now(cur, state.sql)
        cur.execute("SELECT tenant_id, operator_id, entity_key, run_id FROM run_leases WHERE expires_at <= ?",
                    (stamps.stamp(moment),))
        for tenant_id, operator_id, entity_key, run_id in cur.fetchall():
            _interrupt(cur, tenant_id, run_id, moment)
            claims.release(cur, claims.RUN, (tenant_id, operator_id, entity_key), run_id)
            reaped.append(run_id)
    return reaped


def events_of(state: state_module.StateStore, run: Run) -> list[dict[str, Any]]:
    """The run's events, oldest first, each as the API shows it (GET /v1/events/{id})."""
    if not run.event_ids:
        return []
    found: dict[str, dict[str, Any]] = {}
    with state.backend.transaction(write=False) as cur:
        for start in range(0, len(run.event_ids), 200):
            chunk = run.event_ids[start:start + 200]
            cur.execute(
                "SELECT id, reseller_id, tenant_id, type, entity_key, idempotency_key, occurred_at,"
                " received_at, data FROM events"
                f" WHERE tenant_id = ? AND id IN ({', '.join('?' for _ in chunk)})",
                (run.tenant_id, *chunk),
            )
            for row in cur.fetchall():
                found[row[0]] = {
                    "id": row[0], "object": "event", "reseller_id": row[1], "tenant_id": row[2],
                    "type": row[3], "entity_key": row[4], "idempotency_key": row[5],
                    "occurred_at": timefmt.rfc3339(datetime.fromisoformat(row[6])),
                    "received_at": timefmt.rfc3339(datetime.fromisoformat(row[7])),
                    "data": json.loads(row[8]),
                }
    return [found[i] for i in run.event_ids if i in found]


def add_applied(state: state_module.StateStore, tenant_id: str, run_id: str, n: int) -> bool:
    """Count `n` more actions of the run's plan as applied (the executor calls this); False if no such run."""
    with state.backend.transaction(write=True) as cur:
        return add_applied_in(cur, tenant_id, run_id, n)


def add_applied_in(cur: Any, tenant_id: str, run_id: str, n: int) -> bool:
    """`add_applied` in the caller's write transaction."""
    if n < 0:
        raise errors.PermanentError("applied actions are counted up, never down")
    cur.execute("UPDATE runs SET applied = applied + ? WHERE tenant_id = ? AND id = ?",
                (n, tenant_id, run_id))
    return bool(cur.rowcount == 1)


def open_plan(state: state_module.StateStore, tenant_id: str, operator_id: str, digest: str) -> str | None:
    """The id of a still-proposed plan of this operator whose actions have this digest, if any."""
    with state.backend.transaction(write=False) as cur:
        cur.execute(
            "SELECT r.plan_id FROM runs r JOIN plans p ON p.id = r.plan_id AND p.tenant_id = r.tenant_id"
            " WHERE r.tenant_id = ? AND r.operator_id = ? AND r.proposal_digest = ? AND p.status = 'proposed'"
            " ORDER BY r.seq DESC LIMIT 1",
            (tenant_id, operator_id, digest),
        )
        row = cur.fetchone()
    return row[0] if row else None


def get(state: state_module.StateStore, tenant_id: str, run_id: str) -> Run:
    """The tenant's run by id; NotFound for another tenant's, like one that never existed."""
    with state.backend.transaction(write=False) as cur:
        return _read(cur, tenant_id, run_id)


def list_runs(
    state: state_module.StateStore,
    tenant_id: str,
    *,
    operator_id: str | None = None,
    status: str | None = None,
    limit: int | None = None,
    before_seq: int | None = None,
) -> list[Run]:
    """The tenant's runs newest first, optionally of one operator and one status."""
    sql, params = pages.newest_first(
        f"SELECT {_COLUMNS} FROM runs WHERE tenant_id = ?", [tenant_id],
        [("operator_id", operator_id), ("status", status)], limit=limit, before_seq=before_seq)
    with state.backend.transaction(write=False) as cur:
        cur.execute(sql, params)
        return [_run(r) for r in cur.fetchall()]


def latest(state: state_module.StateStore, tenant_id: str, operator_ids: Sequence[str]) -> dict[str, Run]:
    """Each operator's most recent run (operators that never ran are absent)."""
    wanted = list(dict.fromkeys(operator_ids))
    if not wanted:
        return {}
    # One query for a whole page of operators: each one's newest seq, by the (tenant, operator, seq) index.
    with state.backend.transaction(write=False) as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM runs WHERE seq IN (SELECT MAX(seq) FROM runs WHERE tenant_id = ?"
            f" AND operator_id IN ({', '.join('?' * len(wanted))}) GROUP BY operator_id)",
            (tenant_id, *wanted),
        )
        rows = cur.fetchall()
    return {run.operator_id: run for run in map(_run, rows)}


def _interrupt(cur: Any, tenant_id: str, run_id: str, moment: datetime, reason: str = INTERRUPTED) -> None:
    cur.execute(
        "UPDATE runs SET status = 'failed', error = ?, finished_at = ?"
        " WHERE tenant_id = ? AND id = ? AND status = 'running'",
        (reason, stamps.stamp(moment), tenant_id, run_id),
    )
    cur.execute("UPDATE run_queue SET run_id = NULL WHERE run_id = ?", (run_id,))


def _read(cur: Any, tenant_id: str, run_id: str) -> Run:
    cur.execute(f"SELECT {_COLUMNS} FROM runs WHERE tenant_id = ? AND id = ?", (tenant_id, run_id))
    row = cur.fetchone()
    if row is None:
        raise errors.NotFound(f"No such run: '{run_id}'")
    return _run(row)


def _clip(text: str | None) -> str | None:
    return text if text is None or len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"


def _run(row: Any) -> Run:
    return Run(
        seq=int(row[0]), id=row[1], reseller_id=row[2], tenant_id=row[3], operator_id=row[4],
        operator=row[5], entity_key=row[6], trigger=row[7], status=row[8], event_ids=json.loads(row[9]),
        sensed=int(row[10]), proposed=int(row[11]), applied=int(row[12]), plan_id=row[13],
        proposed_by=row[14], error=row[15], started_at=datetime.fromisoformat(row[16]),
        finished_at=stamps.parse(row[17]),
    )
