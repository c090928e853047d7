"""Versioned schema migrations, applied in order on start by every process.

Each migration is a list of statements written once for both backends; the
only dialect difference is spelled `{serial}` (an auto-incrementing key,
dialect.py), except where a statement is a mapping of dialect to its own text (triggers).
Never edit a released migration: add the next one.
"""

from __future__ import annotations

from collections.abc import Mapping

from fibric.store import dialect

Statement = str | Mapping[str, str]

MIGRATIONS: list[tuple[int, str, list[Statement]]] = [
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
            # One pin per tool; only an acknowledgement overwrites one (fibric/store/pin_store.py).
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
    (
        5,
        "event routing, operator runs, schedules",
        [
            # An event is routed once (fibric/store/routing_store.py); events stored before this
            # migration count as routed, so an upgrade does not replay history into operators.
            "ALTER TABLE events ADD COLUMN routed_at TEXT",
            "UPDATE events SET routed_at = received_at",
            "CREATE INDEX events_unrouted ON events (seq) WHERE routed_at IS NULL",
            # Events routed to an operator and not yet consumed by a finished run of it.
            """CREATE TABLE run_queue (
                seq {serial},
                tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
                operator_id TEXT NOT NULL,
                entity_key TEXT NOT NULL,
                event_id TEXT NOT NULL,
                run_id TEXT,
                queued_at TEXT NOT NULL,
                UNIQUE (operator_id, event_id)
            )""",
            "CREATE INDEX run_queue_key ON run_queue (tenant_id, operator_id, entity_key, seq)",
            "CREATE INDEX run_queue_run ON run_queue (run_id)",
            # Single flight: at most one run in progress per (tenant, operator, entity_key).
            """CREATE TABLE run_leases (
                tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
                operator_id TEXT NOT NULL,
                entity_key TEXT NOT NULL,
                run_id TEXT NOT NULL,
                expires_at TEXT NOT NULL,
                PRIMARY KEY (tenant_id, operator_id, entity_key)
            )""",
            """CREATE TABLE runs (
                seq {serial},
                id TEXT NOT NULL UNIQUE,
                reseller_id TEXT NOT NULL,
                tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
                operator_id TEXT NOT NULL,
                operator TEXT NOT NULL,
                entity_key TEXT NOT NULL,
                trigger TEXT NOT NULL,
                status TEXT NOT NULL,
                event_ids TEXT NOT NULL,
                sensed INTEGER NOT NULL DEFAULT 0,
                proposed INTEGER NOT NULL DEFAULT 0,
                applied INTEGER NOT NULL DEFAULT 0,
                plan_id TEXT,
                proposal_digest TEXT,
                proposed_by TEXT,
                error TEXT,
                started_at TEXT NOT NULL,
                finished_at TEXT
            )""",
            "CREATE INDEX runs_tenant_seq ON runs (tenant_id, seq)",
            "CREATE INDEX runs_tenant_operator_seq ON runs (tenant_id, operator_id, seq)",
            "CREATE INDEX runs_proposal ON runs (tenant_id, operator_id, proposal_digest)",
            # The last time each scheduled operator fired: a restart resumes from it.
            """CREATE TABLE schedules (
                tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
                operator_id TEXT NOT NULL,
                last_fired_at TEXT NOT NULL,
                PRIMARY KEY (tenant_id, operator_id)
            )""",
        ],
    ),
    (
        6,
        "executor leases, plan executions, action intents",
        [
            # Single-flight: one row per (tenant, entity) while an executor works on it; an
            # expired row belongs to a dead holder and may be taken over (fibric/store/leases.py).
            """CREATE TABLE leases (
                tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
                entity_key TEXT NOT NULL,
                holder TEXT NOT NULL,
                acquired_at TEXT NOT NULL,
                expires_at TEXT NOT NULL,
                PRIMARY KEY (tenant_id, entity_key)
            )""",
            # One row per approved plan being disposed of, so recovery can finish it after a crash.
            """CREATE TABLE executions (
                tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
                plan_id TEXT NOT NULL,
                only_actions TEXT,
                holder TEXT NOT NULL,
                started_at TEXT NOT NULL,
                expires_at TEXT NOT NULL,
                finished_at TEXT,
                PRIMARY KEY (tenant_id, plan_id)
            )""",
            "CREATE INDEX executions_open ON executions (finished_at, expires_at)",
            # Written before a tool is called, completed with its receipt (fibric/store/intents.py).
            """CREATE TABLE intents (
                id TEXT PRIMARY KEY,
                reseller_id TEXT NOT NULL,
                tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
                plan_id TEXT NOT NULL,
                idempotency_key TEXT NOT NULL,
                calls_tool INTEGER NOT NULL,
                receipt TEXT NOT NULL,
                tool TEXT NOT NULL,
                state TEXT NOT NULL,
                receipt_id TEXT,
                created_at TEXT NOT NULL,
                completed_at TEXT,
                UNIQUE (tenant_id, plan_id, idempotency_key)
            )""",
            "CREATE INDEX intents_key_state ON intents (tenant_id, idempotency_key, state)",
            # The executor asks "did a newer event about this entity arrive?" for every action.
            "CREATE INDEX events_tenant_entity_seq ON events (tenant_id, entity_key, seq)",
        ],
    ),
    (
        7,
        "webhook deliveries, attempts and endpoint health",
        [
            # One row per (endpoint, event): the unique constraint makes fan-out idempotent.
            # next_attempt_at is due time, and while a dispatcher holds `claim`, its lease.
            """CREATE TABLE webhook_deliveries (
                seq {serial},
                id TEXT NOT NULL UNIQUE,
                reseller_id TEXT NOT NULL,
                tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
                webhook_id TEXT NOT NULL,
                event_id TEXT NOT NULL,
                event_type TEXT NOT NULL,
                body TEXT NOT NULL,
                status TEXT NOT NULL,
                attempts INTEGER NOT NULL,
                next_attempt_at TEXT,
                claim TEXT,
                last_status_code INTEGER,
                last_error TEXT,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                UNIQUE (webhook_id, event_id)
            )""",
            "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at)",
            "CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (tenant_id, webhook_id, seq)",
            """CREATE TABLE webhook_attempts (
                seq {serial},
                delivery_id TEXT NOT NULL,
                tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
                number INTEGER NOT NULL,
                started_at TEXT NOT NULL,
                duration_ms INTEGER NOT NULL,
                status_code INTEGER,
                error TEXT,
                UNIQUE (delivery_id, number)
            )""",
            # What the dispatcher observed of an endpoint, and the previous secret during a rotation.
            """CREATE TABLE webhook_endpoints (
                webhook_id TEXT PRIMARY KEY,
                tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
                failing_since TEXT,
                last_success_at TEXT,
                last_failure_at TEXT,
                last_error TEXT,
                disabled_at TEXT,
                disabled_reason TEXT,
                previous_secret TEXT,
                previous_secret_until TEXT
            )""",
        ],
    ),
    (
        8,
        "who wrote each object; tenant secrets",
        [
            # 'installation' (its own spec folder) or 'tenant' (an API key): what the object may use.
            "ALTER TABLE objects ADD COLUMN origin TEXT NOT NULL DEFAULT 'tenant'",
            # Values sealed with the deployment's secret box (fibric/store/secretbox.py), never plain.
            """CREATE TABLE tenant_secrets (
                seq {serial},
                tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
                name TEXT NOT NULL,
                sealed TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                UNIQUE (tenant_id, name)
            )""",
        ],
    ),
    (
        9,
        "receipts of record: per-tenant hash chains, append-only",
        [
            # The system of record for receipts (docs/receipts.md). `seq` is assigned by the writer
            # under the head lock (it is part of the hash), so it is a plain column, unique.
            """CREATE TABLE receipts (
                seq BIGINT NOT NULL UNIQUE,
                tenant_seq BIGINT NOT NULL,
                id TEXT NOT NULL UNIQUE,
                reseller_id TEXT NOT NULL,
                tenant_id TEXT NOT NULL,  -- no foreign key: receipts outlive their tenant
                operator_id TEXT NOT NULL,
                operator TEXT NOT NULL,
                capability TEXT NOT NULL,
                entity_key TEXT NOT NULL,
                args TEXT NOT NULL,
                triggered_by_event TEXT,
                plan_id TEXT,
                run_id TEXT,
                proposed_by TEXT NOT NULL,
                decision TEXT NOT NULL,
                rule TEXT,
                policy TEXT NOT NULL,
                policy_id TEXT,
                policy_sha256 TEXT,
                idempotency_key TEXT NOT NULL,
                outcome TEXT NOT NULL,
                approver TEXT,
                detail TEXT,
                disposed_at TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL,
                UNIQUE (tenant_id, tenant_seq)
            )""",
            {"postgresql": "CREATE SEQUENCE fibric_receipt_seq"},  # SQLite takes MAX(seq) + 1 under its lock
            # A key can be applied once per tenant: a second `applied` receipt is impossible.
            "CREATE UNIQUE INDEX receipts_applied_once ON receipts (tenant_id, idempotency_key)"
            " WHERE outcome = 'applied'",
            "CREATE INDEX receipts_tenant_seq ON receipts (tenant_id, seq)",
            "CREATE INDEX receipts_operator ON receipts (tenant_id, operator_id, seq)",
            "CREATE INDEX receipts_entity ON receipts (tenant_id, entity_key, seq)",
            "CREATE INDEX receipts_decision ON receipts (tenant_id, decision, seq)",
            "CREATE INDEX receipts_plan_action ON receipts (tenant_id, plan_id, idempotency_key)",
            # The policy's counts (last hour, last day): index range reads, whatever the history's length.
            "CREATE INDEX receipts_applied_entity ON receipts (tenant_id, entity_key, disposed_at)"
            " WHERE outcome = 'applied'",
            "CREATE INDEX receipts_applied_entity_capability ON receipts"
            " (tenant_id, entity_key, capability, disposed_at) WHERE outcome = 'applied'",
            "CREATE INDEX receipts_applied_operator ON receipts (tenant_id, operator_id, disposed_at)"
            " WHERE outcome = 'applied'",
            "CREATE INDEX receipts_applied_capability ON receipts (tenant_id, capability, disposed_at)"
            " WHERE outcome = 'applied'",
            # Each tenant's chain head, locked by every append: one chain per tenant, whoever writes.
            """CREATE TABLE receipt_heads (
                tenant_id TEXT PRIMARY KEY,
                tenant_seq BIGINT NOT NULL,
                hash TEXT NOT NULL
            )""",
            # Append-only, enforced by the database itself.
            {"sqlite": "CREATE TRIGGER receipts_no_update BEFORE UPDATE ON receipts"
                       " BEGIN SELECT RAISE(ABORT, 'receipts are append-only'); END",
             "postgresql": "CREATE FUNCTION fibric_receipts_append_only() RETURNS trigger LANGUAGE plpgsql"
                           " AS $$ BEGIN RAISE EXCEPTION 'receipts are append-only'; END $$"},
            {"sqlite": "CREATE TRIGGER receipts_no_delete BEFORE DELETE ON receipts"
                       " BEGIN SELECT RAISE(ABORT, 'receipts are append-only'); END",
             "postgresql": "CREATE TRIGGER receipts_append_only BEFORE UPDATE OR DELETE ON receipts"
                           " FOR EACH ROW EXECUTE FUNCTION fibric_receipts_append_only()"},
            {"postgresql": "CREATE TRIGGER receipts_no_truncate BEFORE TRUNCATE ON receipts"
                           " FOR EACH STATEMENT EXECUTE FUNCTION fibric_receipts_append_only()"},
            {"postgresql": "REVOKE UPDATE, DELETE, TRUNCATE ON receipts FROM PUBLIC"},
        ],
    ),
    (
        10,
        "fencing tokens on every claim (fibric/store/claims.py)",
        [
            "ALTER TABLE leases ADD COLUMN token BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE run_leases ADD COLUMN token BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE executions ADD COLUMN token BIGINT NOT NULL DEFAULT 0",
            # One counter for every kind of claim, so a later claim always has a larger token.
            {"postgresql": "CREATE SEQUENCE fibric_claim_token"},
            {"sqlite": "CREATE TABLE claim_tokens (id INTEGER PRIMARY KEY CHECK (id = 1),"
                       " last BIGINT NOT NULL)"},
            {"sqlite": "INSERT INTO claim_tokens (id, last) VALUES (1, 0)"},
        ],
    ),
    (
        11,
        "model call records: every request to an LLM route, linked to its run and plan",
        [
            # One row per HTTP attempt (fibric/store/model_calls.py, docs/operators.md#model-call-records).
            """CREATE TABLE model_calls (
                id TEXT PRIMARY KEY,
                reseller_id TEXT NOT NULL,
                tenant_id TEXT NOT NULL,
                run_id TEXT NOT NULL,
                operator_id TEXT NOT NULL,
                plan_id TEXT,
                route TEXT NOT NULL,
                model TEXT NOT NULL,
                mode TEXT NOT NULL,
                attempt INTEGER NOT NULL,
                request TEXT NOT NULL,
                answer TEXT,
                http_status INTEGER,
                finish_reason TEXT,
                prompt_tokens BIGINT,
                completion_tokens BIGINT,
                total_tokens BIGINT,
                latency_ms DOUBLE PRECISION NOT NULL,
                outcome TEXT NOT NULL,
                error TEXT,
                started_at TEXT NOT NULL
            )""",
            "CREATE INDEX model_calls_run ON model_calls (tenant_id, run_id, attempt)",
            "CREATE INDEX model_calls_operator ON model_calls (tenant_id, operator_id, started_at)",
        ],
    ),
    (
        12,
        "model call records sealed into the auditors' ledger beside receipts",
        [
            "ALTER TABLE model_calls ADD COLUMN sealed_at TEXT",
            "CREATE INDEX model_calls_unsealed ON model_calls (started_at) WHERE sealed_at IS NULL",
        ],
    ),
    (
        13,
        "approvers: plan expiry, rejection and the deciding key; named keys; declined actions",
        [
            "ALTER TABLE plans ADD COLUMN operator_name TEXT",
            "ALTER TABLE plans ADD COLUMN event_ids TEXT",  # JSON list: every event of the run
            "ALTER TABLE plans ADD COLUMN expires_at TEXT",
            "ALTER TABLE plans ADD COLUMN decided_by TEXT",  # JSON {key_id, key_name}: approved or rejected
            "ALTER TABLE plans ADD COLUMN decided_at TEXT",
            "ALTER TABLE plans ADD COLUMN reason TEXT",  # why rejected, or that it expired
            "CREATE INDEX plans_expiring ON plans (expires_at) WHERE status = 'proposed'",
            "ALTER TABLE api_keys ADD COLUMN name TEXT",
            # The key whose decision a receipt carries out, apart from the free-text `approver` note.
            # Receipts written before have none; their hash leaves an absent decided_by out.
            "ALTER TABLE receipts ADD COLUMN decided_by TEXT",
        ],
    ),
    (
        14,
        "sync status of each apply set: what was applied, what was last tried, drift",
        [
            # One row per (tenant, apply set), upserted by every apply of the set (fibric/store/syncs.py).
            """CREATE TABLE sync_status (
                tenant_id TEXT NOT NULL REFERENCES tenants(id),
                apply_set TEXT NOT NULL,
                revision TEXT,
                applied_at TEXT,
                result TEXT NOT NULL,
                error TEXT,
                attempted_revision TEXT NOT NULL,
                attempted_at TEXT NOT NULL,
                drift TEXT NOT NULL,
                drift_checked_at TEXT,
                PRIMARY KEY (tenant_id, apply_set)
            )""",
        ],
    ),
    (
        15,
        "receipts name the API request and the trace that disposed of them",
        [
            # Receipts written before have neither; their hash leaves an absent one out (receipt_store.py).
            "ALTER TABLE receipts ADD COLUMN request_id TEXT",
            "ALTER TABLE receipts ADD COLUMN trace_id TEXT",
        ],
    ),
    (
        16,
        "events and plans keep the traceparent of the span that stored them (trace links)",
        [
            "ALTER TABLE events ADD COLUMN trace_context TEXT",
            "ALTER TABLE plans ADD COLUMN trace_context TEXT",
        ],
    ),
    (
        17,
        "receipts keep the input document their policy decided on (decision records, replay)",
        [
            # JSON, masked by the Policy's `mask`; receipts written before have none (hashed only when set).
            "ALTER TABLE receipts ADD COLUMN decision_input TEXT",
            "CREATE INDEX receipts_policy ON receipts (tenant_id, policy_id, seq)",  # replay reads by policy
        ],
    ),
]

def statements(sql: dialect.Dialect, statements: list[Statement]) -> list[str]:
    """The migration's statements in `sql`'s dialect (a per-dialect statement absent for it is skipped)."""
    texts = [s if isinstance(s, str) else s.get(sql.name) for s in statements]
    return [t.replace("{serial}", sql.serial) for t in texts if t is not None]


LATEST = MIGRATIONS[-1][0]
