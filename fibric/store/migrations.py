"""Versioned schema migrations, applied in order on start by every process.

Each migration is a list of statements written once for both backends; the
only dialect difference is spelled `{serial}` (an auto-incrementing key).
Never edit a released migration: add the next one.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "tenants, api keys, desired-state objects",
        [
            """CREATE TABLE tenants (
                id TEXT PRIMARY KEY,
                reseller_id TEXT NOT NULL,
                name TEXT NOT NULL UNIQUE,
                created_at TEXT NOT NULL
            )""",
            """CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                reseller_id TEXT NOT NULL,
                tenant_id TEXT NOT NULL REFERENCES tenants(id),
                secret_hash TEXT NOT NULL UNIQUE,
                hint TEXT NOT NULL,
                scopes TEXT NOT NULL,
                created_at TEXT NOT NULL,
                revoked_at TEXT
            )""",
            "CREATE INDEX api_keys_tenant ON api_keys (tenant_id)",
            """CREATE TABLE objects (
                seq {serial},
                id TEXT NOT NULL,
                reseller_id TEXT NOT NULL,
                tenant_id TEXT NOT NULL REFERENCES tenants(id),
                kind TEXT NOT NULL,
                name TEXT NOT NULL,
                spec TEXT NOT NULL,
                labels TEXT NOT NULL,
                generation INTEGER NOT NULL,
                status TEXT NOT NULL,
                apply_set TEXT,
                secret TEXT,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                UNIQUE (tenant_id, kind, name),
                UNIQUE (tenant_id, kind, id)
            )""",
            "CREATE INDEX objects_tenant_kind_seq ON objects (tenant_id, kind, seq)",
        ],
    ),
]

SERIAL = {
    "sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "postgresql": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
}


def statements(dialect: str, statements: list[str]) -> list[str]:
    return [s.replace("{serial}", SERIAL[dialect]) for s in statements]


LATEST = MIGRATIONS[-1][0]
