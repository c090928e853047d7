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
    (
        2,
        "events, execution plans, idempotency keys",
        [
            # One row per (tenant, idempotency_key): the unique constraint is the dedup.
            """CREATE TABLE events (
                seq {serial},
                id TEXT NOT NULL UNIQUE,
                reseller_id TEXT NOT NULL,
                tenant_id TEXT NOT NULL REFERENCES tenants(id),
                type TEXT NOT NULL,
                entity_key TEXT NOT NULL,
                idempotency_key TEXT NOT NULL,
                occurred_at TEXT NOT NULL,
                received_at TEXT NOT NULL,
                data TEXT NOT NULL,
                UNIQUE (tenant_id, idempotency_key)
            )""",
            "CREATE INDEX events_tenant_seq ON events (tenant_id, seq)",
            """CREATE TABLE plans (
                seq {serial},
                id TEXT NOT NULL UNIQUE,
                reseller_id TEXT NOT NULL,
                tenant_id TEXT NOT NULL REFERENCES tenants(id),
                operator_id TEXT NOT NULL,
                run_id TEXT,
                event_id TEXT,
                proposed_by TEXT NOT NULL,
                status TEXT NOT NULL,
                actions TEXT NOT NULL,
                policy_id TEXT,
                proposed_at TEXT NOT NULL,
                approver TEXT,
                approved_at TEXT,
                executed_at TEXT,
                results TEXT
            )""",
            "CREATE INDEX plans_tenant_seq ON plans (tenant_id, seq)",
            "CREATE INDEX plans_tenant_status_seq ON plans (tenant_id, status, seq)",
            "CREATE INDEX plans_tenant_operator_seq ON plans (tenant_id, operator_id, seq)",
            """CREATE TABLE idempotency_keys (
                tenant_id TEXT NOT NULL REFERENCES tenants(id),
                idempotency_key TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                attempt TEXT NOT NULL,
                state TEXT NOT NULL,
                response_status INTEGER,
                response_headers TEXT,
                response_body TEXT,
                created_at TEXT NOT NULL,
                locked_until TEXT NOT NULL,
                expires_at TEXT NOT NULL,
                PRIMARY KEY (tenant_id, idempotency_key)
            )""",
            "CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at)",
        ],
    ),
    (
        3,
        "connector tool pins",
        [
            # One pin per tool; only an acknowledgement overwrites one (fibric/store/pins.py).
            """CREATE TABLE connector_tool_pins (
                tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
                connector TEXT NOT NULL,
                tool TEXT NOT NULL,
                sha256 TEXT NOT NULL,
                pinned_at TEXT NOT NULL,
                PRIMARY KEY (tenant_id, connector, tool)
            )""",
        ],
    ),
    (
        4,
        "webhook outbox",
        [
            # Written in the same transaction as the change it reports (fibric/store/outbox.py);
            # the webhook dispatcher turns each row into one delivery per subscribed endpoint.
            """CREATE TABLE outbox (
                seq {serial},
                id TEXT NOT NULL UNIQUE,
                reseller_id TEXT NOT NULL,
                tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
                type TEXT NOT NULL,
                payload TEXT NOT NULL,
                created_at TEXT NOT NULL,
                dispatched_at TEXT
            )""",
            "CREATE INDEX outbox_pending ON outbox (dispatched_at, seq)",
        ],
    ),
    # MIGRATION 5 (operator runs, schedules: issue 6) goes here.
    # MIGRATION 6 (executor leases, intents: issue 7) goes here.
    # MIGRATION 7 (webhook endpoints' deliveries and secrets: issue 8) goes here.
]

SERIAL = {
    "sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "postgresql": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
}


def statements(dialect: str, statements: list[str]) -> list[str]:
    return [s.replace("{serial}", SERIAL[dialect]) for s in statements]


LATEST = MIGRATIONS[-1][0]
