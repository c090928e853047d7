"""Webhook endpoints as the dispatcher sees them: spec, secrets and observed health.

The spec (url, events, enabled, secret_env) is the desired-state object of
kind Webhook; its generated signing secret is sealed in the object's `secret`
column (fibric/store/secretbox.py). What the dispatcher learns by delivering
lives beside it in `webhook_endpoints`: since when the endpoint fails, and
whether it disabled the endpoint (410 Gone, or 24 h of failures) and why. A
rotation keeps the previous sealed secret there until its grace period ends.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fibric import errors, timefmt
from fibric.store import secretbox, stamps
from fibric.store import state as state_module

_COLUMNS = (
    "o.id, o.reseller_id, o.tenant_id, o.name, o.spec, o.secret, e.failing_since, e.last_success_at,"
    " e.last_failure_at, e.last_error, e.disabled_at, e.disabled_reason, e.previous_secret,"
    " e.previous_secret_until, o.origin"
)
_FROM = (
    "FROM objects o LEFT JOIN webhook_endpoints e ON e.webhook_id = o.id"
    " WHERE o.kind = 'Webhook' AND o.tenant_id = ?"
)


@dataclass(frozen=True)
class Endpoint:
    id: str
    reseller_id: str
    tenant_id: str
    name: str
    spec: dict[str, Any]
    failing_since: datetime | None
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_error: str | None
    disabled_at: datetime | None
    disabled_reason: str | None  # set when the dispatcher disabled it
    previous_until: datetime | None
    sealed_secret: str | None = field(default=None, repr=False)
    sealed_previous: str | None = field(default=None, repr=False)
    origin: str = "tenant"  # who wrote the spec: only the installation's may read a server variable

    @property
    def url(self) -> str:
        return str(self.spec.get("url", ""))

    @property
    def enabled(self) -> bool:
        """Enabled in its spec and not disabled by the dispatcher."""
        return bool(self.spec.get("enabled", True)) and self.disabled_at is None

    def subscribes(self, event_type: str) -> bool:
        return event_type in self.spec.get("events", [])

    def signing_secrets(
        self,
        box: secretbox.SecretBox,
        environ: Mapping[str, str],
        now: datetime,
        tenant_secret: Callable[[str], str | None] = lambda name: None,
    ) -> list[str]:
        """Current secret first, then the previous one while its rotation grace lasts.

        Empty when the secret comes from `secret_ref` and the tenant has no
        such secret, or from `secret_env` and that variable is unset or the
        webhook was not written by the installation.
        """
        secret_ref = self.spec.get("secret_ref")
        if secret_ref:
            value = tenant_secret(secret_ref)
            return [value] if value else []
        secret_env = self.spec.get("secret_env")
        if secret_env:
            value = environ.get(secret_env) if self.origin == "installation" else None
            return [value] if value else []
        found = [box.open(self.sealed_secret, self.tenant_id)] if self.sealed_secret else []
        if self.sealed_previous and self.previous_until is not None and now < self.previous_until:
            found.append(box.open(self.sealed_previous, self.tenant_id))
        return found


def get(cur: Any, tenant_id: str, webhook_id: str) -> Endpoint | None:
    cur.execute(f"SELECT {_COLUMNS} {_FROM} AND o.id = ?", (tenant_id, webhook_id))
    row = cur.fetchone()
    return _endpoint(row) if row else None


def of_tenant(cur: Any, tenant_id: str) -> list[Endpoint]:
    cur.execute(f"SELECT {_COLUMNS} {_FROM} ORDER BY o.seq", (tenant_id,))
    return [_endpoint(r) for r in cur.fetchall()]


def read(state: state_module.StateStore, tenant_id: str, webhook_id: str) -> Endpoint:
    with state.backend.transaction(write=False) as cur:
        endpoint = get(cur, tenant_id, webhook_id)
    if endpoint is None:
        raise errors.NotFound(f"No such webhook: '{webhook_id}'")
    return endpoint


def read_or_none(state: state_module.StateStore, tenant_id: str, webhook_id: str) -> Endpoint | None:
    with state.backend.transaction(write=False) as cur:
        return get(cur, tenant_id, webhook_id)


def health(state: state_module.StateStore, tenant_id: str, webhook_ids: Iterable[str]) -> dict[str, Endpoint]:
    """The endpoints of these ids (one query), for the API's status field."""
    wanted = list(dict.fromkeys(webhook_ids))
    if not wanted:
        return {}
    marks = ", ".join("?" for _ in wanted)
    with state.backend.transaction(write=False) as cur:
        cur.execute(f"SELECT {_COLUMNS} {_FROM} AND o.id IN ({marks})", (tenant_id, *wanted))
        return {e.id: e for e in map(_endpoint, cur.fetchall())}


def record_success(cur: Any, endpoint: Endpoint, at: datetime) -> None:
    _upsert(cur, endpoint, failing_since=None, last_success_at=stamps.stamp(at))


def record_failure(
    cur: Any, endpoint: Endpoint, at: datetime, error: str, *, gone: bool, disable_after_seconds: float
) -> str | None:
    """Note a failed attempt; returns the reason when this failure disables the endpoint."""
    cur.execute("SELECT failing_since FROM webhook_endpoints WHERE webhook_id = ?", (endpoint.id,))
    row = cur.fetchone()
    since = datetime.fromisoformat(row[0]) if row and row[0] else at
    _upsert(cur, endpoint, failing_since=stamps.stamp(since), last_failure_at=stamps.stamp(at),
            last_error=error[:500])
    reason = None
    if gone:
        reason = "the endpoint answered 410 Gone"
    elif (at - since).total_seconds() >= disable_after_seconds:
        hours = disable_after_seconds / 3600
        reason = (f"failing continuously since {timefmt.rfc3339(since)} ({hours:g} h); "
                  f"last error: {error[:200]}")
    if reason is not None:
        disable(cur, endpoint, at, reason)
    return reason


def disable(cur: Any, endpoint: Endpoint, at: datetime, reason: str) -> None:
    """Disabled by the dispatcher: no more deliveries; pending ones fail with the reason."""
    _upsert(cur, endpoint, disabled_at=stamps.stamp(at), disabled_reason=reason)
    cur.execute(
        "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, last_error = ?,"
        " updated_at = ? WHERE webhook_id = ? AND status = 'pending' AND claim IS NULL",
        (f"webhook disabled: {reason}"[:500], stamps.stamp(at), endpoint.id),
    )


def clear_disabled(state: state_module.StateStore, tenant_id: str, webhook_id: str) -> None:
    """Forget a dispatcher's disabling and the failure streak (the enable route)."""
    with state.backend.transaction(write=True) as cur:
        cur.execute(
            "UPDATE webhook_endpoints SET disabled_at = NULL, disabled_reason = NULL, failing_since = NULL"
            " WHERE webhook_id = ? AND tenant_id = ?",
            (webhook_id, tenant_id),
        )


def rotate(
    state: state_module.StateStore,
    box: secretbox.SecretBox,
    tenant_id: str,
    webhook_id: str,
    new_secret: str,
    *,
    grace_seconds: int,
    now: datetime,
) -> Endpoint:
    """Replace the signing secret; the old one keeps signing until `now + grace_seconds`."""
    with state.backend.transaction(write=True, lock_key=f"fibric:tenant:{tenant_id}") as cur:
        endpoint = get(cur, tenant_id, webhook_id)
        if endpoint is None:
            raise errors.NotFound(f"No such webhook: '{webhook_id}'")
        if endpoint.spec.get("secret_env"):
            raise errors.Conflict(
                f"webhook '{endpoint.name}' signs with the environment variable "
                f"{endpoint.spec['secret_env']} (spec.secret_env); rotate it there"
            )
        if endpoint.spec.get("secret_ref"):
            raise errors.Conflict(
                f"webhook '{endpoint.name}' signs with the tenant secret {endpoint.spec['secret_ref']} "
                "(spec.secret_ref); rotate it with `fibric secret set`"
            )
        cur.execute(
            "UPDATE objects SET secret = ?, updated_at = ?"
            " WHERE tenant_id = ? AND kind = 'Webhook' AND id = ?",
            (box.seal(new_secret, tenant_id), now.isoformat(), tenant_id, webhook_id),
        )
        previous = endpoint.sealed_secret if grace_seconds > 0 else None
        until = datetime.fromtimestamp(now.timestamp() + grace_seconds, UTC) if previous else None
        _upsert(cur, endpoint, previous_secret=previous,
                previous_secret_until=stamps.stamp(until) if until else None)
        rotated = get(cur, tenant_id, webhook_id)
    if rotated is None:  # read inside its own transaction: only a broken database gets here
        raise errors.PermanentError(f"webhook '{webhook_id}' vanished inside its own transaction")
    return rotated


def _upsert(cur: Any, endpoint: Endpoint, **values: str | None) -> None:
    columns = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    updates = ", ".join(f"{c} = excluded.{c}" for c in values)
    cur.execute(
        f"INSERT INTO webhook_endpoints (webhook_id, tenant_id, {columns}) VALUES (?, ?, {marks})"
        f" ON CONFLICT (webhook_id) DO UPDATE SET {updates}",
        (endpoint.id, endpoint.tenant_id, *values.values()),
    )


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(
        id=row[0], reseller_id=row[1], tenant_id=row[2], name=row[3], spec=json.loads(row[4]),
        sealed_secret=row[5], failing_since=stamps.parse(row[6]), last_success_at=stamps.parse(row[7]),
        last_failure_at=stamps.parse(row[8]), last_error=row[9], disabled_at=stamps.parse(row[10]),
        disabled_reason=row[11], sealed_previous=row[12], previous_until=stamps.parse(row[13]),
        origin=row[14],
    )
