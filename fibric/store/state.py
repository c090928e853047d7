"""The state store: tenants, API keys and desired-state objects, on either backend.

All reads and writes name the tenant explicitly; no query can cross tenants
except the controller's resync, which reads every object to reconcile it.
Writes that must be all-or-nothing (an apply of many specs) go through
`StateStore.tenant_transaction`, which serializes writers of one tenant.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fibric import errors, ids
from fibric.store import backends, migrations, pages, records, stamps
from fibric.store import dialect as dialect_module  # StateStore.dialect is its name

KEY_PREFIX = "sk_live_"
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@+-]{0,99}")
TENANT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_OBJECT_COLUMNS = (
    "seq, id, reseller_id, tenant_id, kind, name, spec, labels, generation, status, "
    "apply_set, secret, created_at, updated_at, origin"
)


# What opening a store's files can raise besides OSError, for callers that report an unusable data
# dir as a message rather than a traceback, without naming the driver themselves.
OPEN_ERRORS: tuple[type[Exception], ...] = (OSError, sqlite3.Error)


def open_store(location: str | Path) -> StateStore:
    """A migrated store: a postgresql:// URL, else a data dir holding SQLite's state.db."""
    text = str(location)
    backend: backends.Backend
    if text.startswith(("postgresql://", "postgres://")):
        backend = backends.PostgresBackend(text)
    else:
        path = Path(text)
        try:
            backend = backends.SQLiteBackend(path if path.suffix == ".db" else path / "state.db")
        except OSError as e:
            raise errors.PermanentError(f"cannot use data dir {path}: {e.strerror or e}") from e
    store = StateStore(backend)
    try:
        store.migrate()
    except sqlite3.DatabaseError as e:  # e.g. a state.db that is not a SQLite database
        store.close()
        raise errors.PermanentError(f"cannot open state store {text}: {e}") from e
    return store


def hash_secret(secret: str) -> str:
    # API keys carry 192 bits of randomness, so a fast hash is enough at rest.
    # surrogatepass: a malformed key (a lone surrogate from undecodable bytes) is just unknown.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _names_nothing(ref: str) -> bool:
    """True for a reference no row can hold: PostgreSQL text refuses NUL, so look nothing up."""
    return "\x00" in ref


def _now() -> str:
    return datetime.now(UTC).isoformat()


class StateStore:
    def __init__(self, backend: backends.Backend) -> None:
        self.backend = backend

    @property
    def dialect(self) -> str:
        """The dialect's name ("sqlite" or "postgresql"), for what only reports it."""
        return self.backend.dialect

    @property
    def sql(self) -> dialect_module.Dialect:
        """What this store's SQL spells differently (dialect.py)."""
        return self.backend.sql

    def close(self) -> None:
        self.backend.close()

    # --- schema -------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply pending migrations; safe to run from several processes at once."""
        applied: list[int] = []
        with self.backend.transaction(write=True, lock_key="fibric:migrations") as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
        for version, description, statements in migrations.MIGRATIONS:
            with self.backend.transaction(write=True, lock_key="fibric:migrations") as cur:
                cur.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,))
                if cur.fetchone():
                    continue
                for sql in migrations.statements(self.sql, statements):
                    cur.execute(sql)
                cur.execute(
                    "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
                    (version, description, _now()),
                )
                applied.append(version)
        return applied

    def schema_version(self) -> int:
        with self.backend.transaction(write=False) as cur:
            cur.execute("SELECT MAX(version) FROM schema_migrations")
            row = cur.fetchone()
        return int(row[0] or 0)

    # --- tenants ------------------------------------------------------------

    def create_tenant(self, name: str, reseller_id: str) -> records.Tenant:
        if not TENANT_NAME.fullmatch(name) or len(name) > 63:
            raise errors.SpecInvalid(
                errors.SpecProblem("tenant name must be a slug (a-z, 0-9, '-')", path="name")
            )
        tenant = records.Tenant(ids.new_id("tenant"), reseller_id, name, datetime.now(UTC))
        with self.backend.transaction(write=True, lock_key="fibric:tenants") as cur:
            cur.execute("SELECT 1 FROM tenants WHERE name = ?", (name,))
            if cur.fetchone():
                raise errors.Conflict(f"tenant '{name}' already exists")
            cur.execute(
                "INSERT INTO tenants (id, reseller_id, name, created_at) VALUES (?, ?, ?, ?)",
                (tenant.id, reseller_id, name, tenant.created_at.isoformat()),
            )
        return tenant

    def list_tenants(self) -> list[records.Tenant]:
        with self.backend.transaction(write=False) as cur:
            cur.execute("SELECT id, reseller_id, name, created_at FROM tenants ORDER BY created_at")
            rows = cur.fetchall()
        return [records.Tenant(r[0], r[1], r[2], datetime.fromisoformat(r[3])) for r in rows]

    def get_tenant(self, name_or_id: str) -> records.Tenant:
        for tenant in self.list_tenants():
            if name_or_id in (tenant.name, tenant.id):
                return tenant
        raise errors.NotFound(f"no tenant '{name_or_id}'")

    # --- API keys -----------------------------------------------------------

    def create_api_key(
        self, tenant_id: str, scopes: frozenset[str], *, name: str | None = None
    ) -> tuple[records.ApiKey, str]:
        """A new key for the tenant; the secret is returned here once and stored only as a hash.

        `name` says whose key it is (a person, a pipeline): approvals record it beside the key's id.
        """
        if name is not None and not KEY_NAME.fullmatch(name):
            raise errors.SpecInvalid(errors.SpecProblem(
                "a key name is 1-100 characters: letters, digits, spaces and . _ @ + -", path="name"))
        unknown = sorted(scopes - set(records.SCOPES))
        if unknown or not scopes:
            raise errors.SpecInvalid(
                errors.SpecProblem(
                    f"unknown scope(s) {', '.join(unknown)}; choose from: {', '.join(records.SCOPES)}"
                    if unknown else "at least one scope is required",
                    path="scopes",
                )
            )
        secret = KEY_PREFIX + secrets.token_hex(24)
        tenant = self.get_tenant(tenant_id)
        key = records.ApiKey(
            id=ids.new_id("key"),
            reseller_id=tenant.reseller_id,
            tenant_id=tenant.id,
            scopes=frozenset(scopes),
            hint=secret[: len(KEY_PREFIX) + 4],
            created_at=datetime.now(UTC),
            name=name,
        )
        with self.backend.transaction(write=True) as cur:
            cur.execute(
                "INSERT INTO api_keys (id, reseller_id, tenant_id, secret_hash, hint, scopes, created_at,"
                " name) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key.id, key.reseller_id, key.tenant_id, hash_secret(secret), key.hint,
                 " ".join(sorted(scopes)), key.created_at.isoformat(), name),
            )
        return key, secret

    def list_api_keys(self, tenant_id: str | None = None) -> list[records.ApiKey]:
        sql = "SELECT id, reseller_id, tenant_id, scopes, hint, created_at, revoked_at, name FROM api_keys"
        params: tuple[Any, ...] = ()
        if tenant_id is not None:
            sql, params = sql + " WHERE tenant_id = ?", (tenant_id,)
        with self.backend.transaction(write=False) as cur:
            cur.execute(sql + " ORDER BY created_at", params)
            rows = cur.fetchall()
        return [
            records.ApiKey(r[0], r[1], r[2], frozenset(r[3].split()), r[4],
                           datetime.fromisoformat(r[5]), stamps.parse(r[6]), r[7])
            for r in rows
        ]

    def revoke_api_key(self, key_id: str) -> None:
        if _names_nothing(key_id):
            raise errors.NotFound(f"no API key '{key_id}'")
        with self.backend.transaction(write=True) as cur:
            cur.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (_now(), key_id),
            )
            if cur.rowcount == 0:
                cur.execute("SELECT 1 FROM api_keys WHERE id = ?", (key_id,))
                if not cur.fetchone():
                    raise errors.NotFound(f"no API key '{key_id}'")

    def authenticate(self, secret: str) -> records.Principal:
        """The principal a key stands for; Unauthenticated for unknown or revoked keys."""
        if not secret.startswith(KEY_PREFIX):
            raise errors.Unauthenticated("API key is malformed")
        with self.backend.transaction(write=False) as cur:
            cur.execute(
                "SELECT id, reseller_id, tenant_id, scopes, revoked_at, name FROM api_keys"
                " WHERE secret_hash = ?",
                (hash_secret(secret),),
            )
            row = cur.fetchone()
        if row is None:
            raise errors.Unauthenticated("API key is not recognised")
        if row[4] is not None:
            raise errors.Unauthenticated("API key has been revoked")
        return records.Principal(
            reseller_id=row[1], tenant_id=row[2], key_id=row[0], scopes=frozenset(row[3].split()),
            key_name=row[5],
        )

    # --- objects ------------------------------------------------------------

    @contextmanager
    def tenant_transaction(self, tenant_id: str) -> Iterator[ObjectTransaction]:
        """All-or-nothing writes for one tenant; concurrent writers of the tenant wait."""
        if _names_nothing(tenant_id):
            raise errors.NotFound(f"no tenant '{tenant_id}'")
        with self.backend.transaction(write=True, lock_key=f"fibric:tenant:{tenant_id}") as cur:
            cur.execute("SELECT reseller_id FROM tenants WHERE id = ?", (tenant_id,))
            row = cur.fetchone()
            if row is None:
                raise errors.NotFound(f"no tenant '{tenant_id}'")
            yield ObjectTransaction(cur, row[0], tenant_id)

    def get_object(self, tenant_id: str, kind: str, ref: str) -> records.StoredObject:
        """The object of `kind` whose id or name is `ref`, in this tenant only."""
        if _names_nothing(ref):
            raise errors.NotFound(f"No such {kind.lower()}: '{ref}'")
        column = "id" if "_" in ref else "name"  # names are slugs, ids always carry a '_'
        with self.backend.transaction(write=False) as cur:
            cur.execute(
                f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE tenant_id = ? AND kind = ? AND {column} = ?",
                (tenant_id, kind, ref),
            )
            row = cur.fetchone()
        if row is None:
            raise errors.NotFound(f"No such {kind.lower()}: '{ref}'")
        return _object(row)

    def list_objects(
        self,
        tenant_id: str,
        kind: str,
        *,
        limit: int | None = None,
        before_seq: int | None = None,
    ) -> list[records.StoredObject]:
        """Newest first; `before_seq` continues a page (stable under concurrent inserts)."""
        sql, params = pages.newest_first(
            f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE tenant_id = ? AND kind = ?", [tenant_id, kind],
            limit=limit, before_seq=before_seq)
        with self.backend.transaction(write=False) as cur:
            cur.execute(sql, params)
            rows = cur.fetchall()
        return [_object(r) for r in rows]

    def all_objects(self) -> list[records.StoredObject]:
        """Every object of every tenant: the controller's periodic resync reads this."""
        with self.backend.transaction(write=False) as cur:
            cur.execute(f"SELECT {_OBJECT_COLUMNS} FROM objects ORDER BY seq")
            rows = cur.fetchall()
        return [_object(r) for r in rows]

    def set_status(self, obj: records.StoredObject, status: dict[str, Any]) -> bool:
        """Record what the controller observed; never touches spec or generation.

        Returns False if the object has been deleted meanwhile.
        """
        with self.backend.transaction(write=True, durable=False) as cur:  # the next reconcile rewrites it
            cur.execute(
                "UPDATE objects SET status = ? WHERE tenant_id = ? AND kind = ? AND id = ?",
                (_dumps(status), obj.tenant_id, obj.kind, obj.id),
            )
            return cur.rowcount > 0

    def set_statuses(self, changes: Sequence[tuple[records.StoredObject, dict[str, Any]]]) -> None:
        """`set_status` of many objects in one transaction (one deleted meanwhile is left as it is)."""
        if not changes:
            return
        with self.backend.transaction(write=True, durable=False) as cur:
            for obj, status in changes:
                cur.execute("UPDATE objects SET status = ? WHERE tenant_id = ? AND kind = ? AND id = ?",
                            (_dumps(status), obj.tenant_id, obj.kind, obj.id))


class ObjectTransaction:
    """Object reads and writes inside one tenant's transaction."""

    def __init__(self, cursor: backends.Cursor, reseller_id: str, tenant_id: str) -> None:
        self._cur = cursor
        self.reseller_id = reseller_id
        self.tenant_id = tenant_id

    def list(self, kind: str | None = None) -> list[records.StoredObject]:
        sql = f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE tenant_id = ?"
        params: list[Any] = [self.tenant_id]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        self._cur.execute(sql + " ORDER BY seq", params)
        return [_object(r) for r in self._cur.fetchall()]

    def get(self, kind: str, ref: str) -> records.StoredObject | None:
        if _names_nothing(ref):
            return None
        column = "id" if "_" in ref else "name"
        self._cur.execute(
            f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE tenant_id = ? AND kind = ? AND {column} = ?",
            (self.tenant_id, kind, ref),
        )
        row = self._cur.fetchone()
        return _object(row) if row else None

    def insert(
        self,
        kind: str,
        name: str,
        spec: dict[str, Any],
        labels: dict[str, str],
        *,
        apply_set: str | None = None,
        secret: str | None = None,
        origin: str = "tenant",
    ) -> records.StoredObject:
        now = _now()
        object_id = ids.object_id(kind, name)
        self._cur.execute(
            "INSERT INTO objects (id, reseller_id, tenant_id, kind, name, spec, labels, generation,"
            " status, apply_set, secret, created_at, updated_at, origin)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?)",
            (object_id, self.reseller_id, self.tenant_id, kind, name, _dumps(spec), _dumps(labels),
             _dumps({}), apply_set, secret, now, now, origin),
        )
        return self._reread(kind, name)

    def update(
        self,
        obj: records.StoredObject,
        spec: dict[str, Any],
        labels: dict[str, str],
        *,
        secret: str | None = None,
        origin: str | None = None,
    ) -> records.StoredObject:
        """Write a new spec and labels; the generation moves only when the spec changed.

        A `secret` replaces the stored one; without it the stored secret is kept.
        `origin` records who wrote the spec; None keeps it (a change of labels only).
        """
        generation = obj.generation + (1 if spec != obj.spec else 0)
        self._cur.execute(
            "UPDATE objects SET spec = ?, labels = ?, generation = ?, updated_at = ?,"
            " secret = COALESCE(?, secret), origin = COALESCE(?, origin)"
            " WHERE tenant_id = ? AND kind = ? AND id = ?",
            (_dumps(spec), _dumps(labels), generation, _now(), secret, origin, self.tenant_id, obj.kind,
             obj.id),
        )
        return self._reread(obj.kind, obj.id)

    def _reread(self, kind: str, ref: str) -> records.StoredObject:
        obj = self.get(kind, ref)
        if obj is None:  # written in this very transaction: only a broken database gets here
            raise errors.PermanentError(f"{kind} '{ref}' vanished inside its own transaction")
        return obj

    def delete(self, obj: records.StoredObject) -> None:
        self._cur.execute(
            "DELETE FROM objects WHERE tenant_id = ? AND kind = ? AND id = ?",
            (self.tenant_id, obj.kind, obj.id),
        )


def _dumps(value: Any) -> str:
    # Key order is kept as declared (a connector's capability map reads as written);
    # comparisons are on decoded dicts, so order never makes a spec look changed.
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _object(row: Any) -> records.StoredObject:
    return records.StoredObject(
        seq=int(row[0]),
        id=row[1],
        reseller_id=row[2],
        tenant_id=row[3],
        kind=row[4],
        name=row[5],
        spec=json.loads(row[6]),
        labels=json.loads(row[7]),
        generation=int(row[8]),
        status=json.loads(row[9]),
        apply_set=row[10],
        secret=row[11],
        created_at=datetime.fromisoformat(row[12]),
        updated_at=datetime.fromisoformat(row[13]),
        origin=row[14],
    )
