"""Per-tenant secrets: tokens a tenant's specs reference by name instead of a server variable.

A tenant stores a value once (`fibric secret set NAME`, `PUT /v1/secrets/NAME`)
and names it in a spec (`bearer_token_ref`, `secret_ref`). The value is
sealed with the deployment's secret box, bound to the tenant, so a copy of
the database alone reveals nothing and one tenant's sealed value cannot be
opened as another's. Lists show names and a fingerprint (an HMAC under the
box's key, so equal values can be recognised without being guessable from
it); only the runtime that uses a secret ever opens it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fibric import errors, timefmt
from fibric.store import pages, secretbox, stamps
from fibric.store import state as state_module

MAX_VALUE_BYTES = 16 * 1024
_COLUMNS = "seq, name, fingerprint, created_at, updated_at"
_ONE = f"SELECT {_COLUMNS} FROM tenant_secrets WHERE tenant_id = ? AND name = ?"


@dataclass(frozen=True)
class SecretInfo:
    """What anyone may see of a secret: never its value."""

    seq: int
    name: str
    fingerprint: str
    created_at: datetime
    updated_at: datetime


def put(
    state: state_module.StateStore, box: secretbox.SecretBox, tenant_id: str, name: str, value: str
) -> tuple[SecretInfo, bool]:
    """Store (or replace) a secret; (its info, whether it was created)."""
    if not value:
        raise errors.SpecInvalid(errors.SpecProblem("must not be empty", path="value"))
    if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
        raise errors.SpecInvalid(errors.SpecProblem(f"is longer than {MAX_VALUE_BYTES} bytes", path="value"))
    sealed = box.seal(value, _context(tenant_id, name))
    fingerprint = box.fingerprint(value, tenant_id)
    now = stamps.stamp(timefmt.now())
    with state.backend.transaction(write=True, lock_key=f"fibric:tenant:{tenant_id}") as cur:
        cur.execute("UPDATE tenant_secrets SET sealed = ?, fingerprint = ?, updated_at = ?"
                    " WHERE tenant_id = ? AND name = ?", (sealed, fingerprint, now, tenant_id, name))
        created = cur.rowcount == 0
        if created:
            cur.execute("INSERT INTO tenant_secrets (tenant_id, name, sealed, fingerprint, created_at,"
                        " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                        (tenant_id, name, sealed, fingerprint, now, now))
        cur.execute(_ONE, (tenant_id, name))
        row = cur.fetchone()
    return _info(row), created


def page(
    state: state_module.StateStore, tenant_id: str, *, limit: int | None = None, before_seq: int | None = None
) -> list[SecretInfo]:
    """A tenant's secrets, newest first."""
    sql, params = pages.newest_first(f"SELECT {_COLUMNS} FROM tenant_secrets WHERE tenant_id = ?",
                                     [tenant_id], limit=limit, before_seq=before_seq)
    with state.backend.transaction(write=False) as cur:
        cur.execute(sql, params)
        return [_info(r) for r in cur.fetchall()]


def info(state: state_module.StateStore, tenant_id: str, name: str) -> SecretInfo | None:
    with state.backend.transaction(write=False) as cur:
        cur.execute(_ONE, (tenant_id, name))
        row = cur.fetchone()
    return _info(row) if row else None


def delete(state: state_module.StateStore, tenant_id: str, name: str) -> None:
    """Remove a secret; NotFound if the tenant has none of that name."""
    with state.backend.transaction(write=True, lock_key=f"fibric:tenant:{tenant_id}") as cur:
        cur.execute("DELETE FROM tenant_secrets WHERE tenant_id = ? AND name = ?", (tenant_id, name))
        if cur.rowcount == 0:
            raise errors.NotFound(f"No such secret: '{name}'")


def reveal(state: state_module.StateStore, box: secretbox.SecretBox, tenant_id: str, name: str) -> str | None:
    """The plaintext, for the component that sends it (a connector, the webhook signer); None if unset."""
    with state.backend.transaction(write=False) as cur:
        cur.execute("SELECT sealed FROM tenant_secrets WHERE tenant_id = ? AND name = ?", (tenant_id, name))
        row = cur.fetchone()
    return box.open(row[0], _context(tenant_id, name)) if row else None


def _context(tenant_id: str, name: str) -> str:
    # Bound as associated data: a sealed value moved to another tenant or name does not open.
    return f"{tenant_id}/secret/{name}"


def _info(row: tuple[object, ...]) -> SecretInfo:
    return SecretInfo(seq=int(str(row[0])), name=str(row[1]), fingerprint=str(row[2]),
                      created_at=stamps.parse(str(row[3])) or timefmt.now(),
                      updated_at=stamps.parse(str(row[4])) or timefmt.now())
