"""Idempotency-Key records: the first response to a POST, kept so a retry replays it.

Stripe's semantics, in the state store so every replica sees the same keys:
the first request with a key claims it (`begin`) and, when it has an answer
worth keeping, stores it (`finish`); otherwise it gives the key back
(`release`), so a retry runs afresh. A second request with the key replays the
stored answer, is told the first is still running, or, if it differs from the
first, is refused. Keys are per tenant and kept `RETENTION` (24 h).

A claim is a row inserted under the table's primary key, so two requests
racing with one key cannot both run, on SQLite or PostgreSQL, in one process
or many. A claim whose process died is taken over after `LEASE`, with a
new fencing token from the store's one counter (claims.py): the request that
lost the key can neither store its answer nor give the key back.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from fibric.store import claims, stamps
from fibric.store import state as state_module

RETENTION = timedelta(hours=24)
LEASE = timedelta(minutes=5)  # a running claim older than this belongs to a dead process
MAX_KEY_LENGTH = 255
_PURGE_CHANCE = 0.01  # share of claims that also delete expired records, to bound the table


@dataclass(frozen=True)
class Started:
    """This request holds the key: run it, then `finish` or `release` with `attempt`."""

    attempt: str


@dataclass(frozen=True)
class Replay:
    """The key's stored first response."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class InFlight:
    """Another request with this key is still running."""


@dataclass(frozen=True)
class Mismatch:
    """The key was first used with different parameters."""


Outcome = Started | Replay | InFlight | Mismatch


def begin(state: state_module.StateStore, tenant_id: str, key: str, fingerprint: str) -> Outcome:
    """Claim `key` for a request whose parameters hash to `fingerprint`, or say why not."""
    for _ in range(3):  # a record released between our insert and our read: claim again
        with state.backend.transaction(write=True) as cur:
            now = stamps.db_now(cur, state.sql)  # the lock is judged by every replica alike
            attempt = str(claims.next_token(cur, state.sql))  # fences finish and release (claims.py)
            if random.random() < _PURGE_CHANCE:
                cur.execute("DELETE FROM idempotency_keys WHERE expires_at < ?", (stamps.stamp(now),))
            cur.execute(
                "INSERT INTO idempotency_keys (tenant_id, idempotency_key, fingerprint, attempt, state,"
                " created_at, locked_until, expires_at) VALUES (?, ?, ?, ?, 'running', ?, ?, ?)"
                " ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING attempt",
                (tenant_id, key, fingerprint, attempt, stamps.stamp(now), stamps.stamp(now + LEASE),
                 stamps.stamp(now + RETENTION)),
            )
            if cur.fetchone() is not None:
                return Started(attempt)
            cur.execute(
                "SELECT fingerprint, attempt, state, response_status, response_headers, response_body,"
                " locked_until, expires_at FROM idempotency_keys WHERE tenant_id = ? AND idempotency_key = ?",
                (tenant_id, key),
            )
            row = cur.fetchone()
            if row is None:
                continue
            stored_fingerprint, holder, status, code, headers, body, locked_until, expires_at = row
            expired = expires_at <= stamps.stamp(now)
            abandoned = status == "running" and locked_until <= stamps.stamp(now)
            if expired or (abandoned and stored_fingerprint == fingerprint):
                cur.execute(
                    "UPDATE idempotency_keys SET fingerprint = ?, attempt = ?, state = 'running',"
                    " response_status = NULL, response_headers = NULL, response_body = NULL,"
                    " created_at = ?, locked_until = ?, expires_at = ?"
                    " WHERE tenant_id = ? AND idempotency_key = ? AND attempt = ?",
                    (fingerprint, attempt, stamps.stamp(now), stamps.stamp(now + LEASE),
                     stamps.stamp(now + RETENTION), tenant_id, key, holder),
                )
                if cur.rowcount == 1:
                    return Started(attempt)
                continue
            if stored_fingerprint != fingerprint:
                return Mismatch()
            if status == "running":
                return InFlight()
            return Replay(int(code), [(str(k), str(v)) for k, v in json.loads(headers)],
                          str(body).encode("utf-8"))
    return InFlight()


def finish(
    state: state_module.StateStore,
    tenant_id: str,
    key: str,
    attempt: str,
    *,
    status: int,
    headers: Sequence[tuple[str, str]],
    body: bytes,
) -> bool:
    """Store the response of the request holding the key; False if it lost the key meanwhile."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        # Our responses are JSON; anything else is not worth replaying, so let a retry run.
        release(state, tenant_id, key, attempt)
        return False
    with state.backend.transaction(write=True) as cur:
        cur.execute(
            "UPDATE idempotency_keys SET state = 'done', response_status = ?, response_headers = ?,"
            " response_body = ? WHERE tenant_id = ? AND idempotency_key = ? AND attempt = ?",
            (status, json.dumps([list(h) for h in headers]), text, tenant_id, key, attempt),
        )
        return cur.rowcount == 1


def release(state: state_module.StateStore, tenant_id: str, key: str, attempt: str) -> None:
    """Give the key back: the request saved nothing, so a retry with it runs afresh."""
    with state.backend.transaction(write=True) as cur:
        cur.execute(
            "DELETE FROM idempotency_keys WHERE tenant_id = ? AND idempotency_key = ? AND attempt = ?",
            (tenant_id, key, attempt),
        )



