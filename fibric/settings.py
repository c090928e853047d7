"""One settings object, read once from flags and FIBRIC_* variables, then passed down.

Nothing in Fibric reads the environment for configuration after start-up;
components receive the part of `Settings` they need.

Every setting describes itself in its field's metadata (`about(...)`: its
variable, its `fibric serve` flag, what it means), and the few variables read
elsewhere are in `ELSEWHERE`; the configuration reference, docs/configuration.md,
is rendered from both (`python -m fibric.settings --markdown`), and a test
fails when the committed page differs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

ABOUT = "fibric.about"  # the metadata key of a setting's About
SECTION = "fibric.section"  # the metadata key of a group's Section


@dataclass(frozen=True)
class About:
    """What the configuration reference says of one setting."""

    meaning: str
    env: str | None = None  # its FIBRIC_* variable; None: a flag only, or fixed
    flag: str | None = None  # its `fibric serve` flag
    default: str | None = None  # what the default means, where its value alone does not say


def about(meaning: str, *, env: str | None = None, flag: str | None = None,
          default: str | None = None) -> dict[str, About]:
    """A setting's field metadata: `field(default=..., metadata=about(...))`."""
    return {ABOUT: About(meaning, env, flag, default)}


@dataclass(frozen=True)
class Section:
    """A heading of the configuration reference: a group of settings, or variables read elsewhere."""

    title: str
    intro: str


def section(title: str, intro: str) -> dict[str, Section]:
    return {SECTION: Section(title, intro)}


@dataclass(frozen=True)
class StoreSettings:
    """Where desired state lives: a data dir (SQLite) or a PostgreSQL URL."""

    data_dir: Path = field(default=Path(".fibric"), metadata=about(
        "The data dir: the SQLite store (`state.db`), the local sealed ledger, `secret.key`, and "
        "`secrets/`, where `serve --specs` writes new webhooks' signing secrets. Each replica has its own.",
        env="FIBRIC_DATA_DIR", flag="--data-dir"))
    url: str | None = field(default=None, metadata=about(
        "PostgreSQL URL (`postgresql://...`) of the state store, which replicas share.",
        env="FIBRIC_STORE", flag="--store", default="SQLite in the data dir"))
    # The auditors' sealed ledger (docs/receipts.md#replicas). Default: a DuckLake in data_dir, for one
    # process; replicas share one, in PostgreSQL.
    ledger_catalog: str | None = field(default=None, metadata=about(
        "DuckLake's catalog of the sealed ledger replicas share: `postgres:` and a libpq connection "
        "string or URL (`postgres:dbname=fibric host=db user=fibric`).",
        env="FIBRIC_LEDGER_CATALOG", default="a DuckLake file in the data dir"))
    ledger_data_path: str | None = field(default=None, metadata=about(
        "The folder the sealed ledger's Parquet files go to, the same for every replica (a shared "
        "mount); required with a PostgreSQL catalog.",
        env="FIBRIC_LEDGER_DATA_PATH", default="`ledger/` in the data dir"))
    ledger_schema: str | None = field(default=None, metadata=about(
        "The PostgreSQL schema holding the ledger catalog's tables.",
        env="FIBRIC_LEDGER_SCHEMA", default="DuckLake's, `public`"))

    @property
    def location(self) -> str:
        return self.url or str(self.data_dir / "state.db")


@dataclass(frozen=True)
class ServerSettings:
    """Where the API listens, and how much it takes at once."""

    host: str = field(default="127.0.0.1", metadata=about(
        "Address to listen on.", env="FIBRIC_HOST", flag="--host"))
    port: int = field(default=8080, metadata=about(
        "Port to listen on; 0 takes any free port.", env="FIBRIC_PORT", flag="--port"))
    max_body_bytes: int = field(default=8 * 1_048_576, metadata=about(  # an apply of thousands of specs
        "Largest request body; a larger one is refused with 413.", default="8 MiB"))
    worker_threads: int | None = field(default=None, metadata=about(
        "Threads for the API's quick blocking work (store queries); see [api.md](api.md#performance).",
        env="FIBRIC_WORKER_THREADS",
        default="one per CPU (at least 2) on SQLite, min(32, CPUs + 4) on PostgreSQL"))
    slow_threads: int = field(default=40, metadata=about(
        "Threads for the API's slow work (receipts SQL, audit snapshots, applies, policy replay, "
        "approvals' execution), apart from the quick threads; see [operations.md](operations.md#bulkheads).",
        env="FIBRIC_SLOW_THREADS"))


@dataclass(frozen=True)
class ControllerSettings:
    """The reconcile loop, and the specs folder `serve` applies."""

    resync_seconds: float = field(default=30.0, metadata=about(
        "Seconds between full reconciles, which catch writes made by other processes.",
        env="FIBRIC_RESYNC_SECONDS"))
    max_backoff_seconds: float = field(default=300.0, metadata=about(
        "Longest wait before retrying an object whose reconcile failed, or a background service "
        "(event router, scheduler, recovery, webhook dispatcher, sealer) whose pass failed."))
    specs_dir: Path | None = field(default=None, metadata=about(
        "A specs folder to apply at start, as the `--tenant` tenant's, pruning what left it.",
        env="FIBRIC_SPECS", flag="--specs"))
    watch: bool = field(default=False, metadata=about(
        "With a specs folder: apply it again whenever a file changes.", flag="--watch"))
    apply_set: str = field(default="serve", metadata=about(
        "The apply set of the specs folder: what it prunes."))
    sync_self_heal: bool = field(default=False, metadata=about(
        "With `--watch`: `on` applies the folder again when objects of its apply set were changed or "
        "deleted through the API; `off` reports that drift in `fibric status` ([sync.md](sync.md)).",
        env="FIBRIC_SYNC_SELF_HEAL"))


@dataclass(frozen=True)
class RateLimitSettings:
    """Requests per minute per tenant and route class (the reference's defaults), and where counts live.

    `overrides` maps a tenant id to its own ceilings, e.g. {"t_1": {"events": 1200}};
    env FIBRIC_RATE_LIMIT_OVERRIDES="t_1:events=1200,reads=5000;t_2:writes=300".
    Counters live in this process unless `redis_url` (FIBRIC_REDIS_URL) is set,
    which replicas must share so a tenant's budget is one budget.
    """

    reads_per_minute: int = field(default=1000, metadata=about(
        "Read requests per minute per tenant.", env="FIBRIC_RATE_LIMIT_READS"))
    writes_per_minute: int = field(default=120, metadata=about(
        "Write requests per minute per tenant.", env="FIBRIC_RATE_LIMIT_WRITES"))
    events_per_minute: int = field(default=600, metadata=about(
        "Events (`POST /v1/events`) per minute per tenant.", env="FIBRIC_RATE_LIMIT_EVENTS"))
    overrides: Mapping[str, Mapping[str, int]] = field(default_factory=dict, metadata=about(
        "Ceilings of particular tenants: `t_1:events=1200,reads=5000;t_2:writes=300`.",
        env="FIBRIC_RATE_LIMIT_OVERRIDES"))
    redis_url: str | None = field(default=None, metadata=about(
        "Redis URL keeping the counters, so replicas share one budget per tenant.",
        env="FIBRIC_REDIS_URL", default="counters in this process"))

    def per_minute(self, tenant_id: str | None, route_class: str) -> int:
        """The ceiling of one route class ("reads", "writes", "events") for a tenant."""
        override = self.overrides.get(tenant_id, {}) if tenant_id else {}
        if route_class in override:
            return int(override[route_class])
        return int(getattr(self, f"{route_class}_per_minute"))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RateLimitSettings:
        overrides: dict[str, dict[str, int]] = {}
        for entry in filter(None, (e.strip() for e in env.get("FIBRIC_RATE_LIMIT_OVERRIDES", "").split(";"))):
            tenant_id, _, ceilings = entry.partition(":")
            for ceiling in filter(None, (c.strip() for c in ceilings.split(","))):
                route_class, _, value = ceiling.partition("=")
                if route_class.strip() not in ("reads", "writes", "events"):
                    raise ValueError(f"FIBRIC_RATE_LIMIT_OVERRIDES: unknown route class in {ceiling!r}")
                overrides.setdefault(tenant_id.strip(), {})[route_class.strip()] = int(value)
        return cls(
            reads_per_minute=int(env.get("FIBRIC_RATE_LIMIT_READS") or cls.reads_per_minute),
            writes_per_minute=int(env.get("FIBRIC_RATE_LIMIT_WRITES") or cls.writes_per_minute),
            events_per_minute=int(env.get("FIBRIC_RATE_LIMIT_EVENTS") or cls.events_per_minute),
            overrides=overrides,
            redis_url=env.get("FIBRIC_REDIS_URL") or None,
        )


@dataclass(frozen=True)
class PolicySettings:
    """Which engine evaluates Rego, and how the embedded one bounds it (docs/policies.md#configuration).

    "embedded" runs rego-cpp in a pool of worker processes that are killed at
    a decision's deadline; "opa" asks the OPA server at `url`, to which the
    controller pushes every policy version it reconciles. For every count
    below, 0 means the documented default.
    """

    engine: str = field(default="embedded", metadata=about(
        "`embedded` (rego-cpp in worker processes) or `opa` (an OPA server).", env="FIBRIC_POLICY_ENGINE"))
    url: str | None = field(default=None, metadata=about(
        "OPA's base URL, `http(s)://host:port`; required for `opa`.", env="FIBRIC_OPA_URL"))
    timeout_ms: int = field(default=100, metadata=about(
        "One decision's budget in milliseconds; over it is BLOCK.", env="FIBRIC_POLICY_TIMEOUT_MS"))
    workers: int = field(default=0, metadata=about(
        "Embedded only: worker processes evaluating Rego.", env="FIBRIC_POLICY_WORKERS",
        default="max(2, CPUs)"))
    queue_timeout_ms: int = field(default=0, metadata=about(
        "Embedded only: longest wait in milliseconds for a tenant slot and a free worker.",
        env="FIBRIC_POLICY_QUEUE_TIMEOUT_MS", default="1000 ms"))
    tenant_max_in_flight: int = field(default=0, metadata=about(
        "Embedded only: evaluations one tenant may have in flight, waiting ones included.",
        env="FIBRIC_POLICY_TENANT_MAX_IN_FLIGHT", default="workers - 1, at least 1"))
    breaker_timeouts: int = field(default=3, metadata=about(
        "Embedded only: consecutive timeouts of one policy version that open its circuit; 0 never does.",
        env="FIBRIC_POLICY_BREAKER_TIMEOUTS"))
    breaker_cooldown_seconds: float = field(default=30.0, metadata=about(
        "Embedded only: seconds an open circuit BLOCKs before one probe decision.",
        env="FIBRIC_POLICY_BREAKER_COOLDOWN_SECONDS"))
    token_env: str | None = field(default=None, metadata=about(
        "Name of the variable holding OPA's bearer token, if OPA requires one.", env="FIBRIC_OPA_TOKEN_ENV"))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PolicySettings:
        engine = env.get("FIBRIC_POLICY_ENGINE") or cls.engine
        if engine not in ("embedded", "opa"):
            raise ValueError(f"FIBRIC_POLICY_ENGINE must be 'embedded' or 'opa', not {engine!r}")
        timeout_ms = int(env.get("FIBRIC_POLICY_TIMEOUT_MS") or cls.timeout_ms)
        workers = int(env.get("FIBRIC_POLICY_WORKERS") or cls.workers)
        queue_timeout_ms = int(env.get("FIBRIC_POLICY_QUEUE_TIMEOUT_MS") or cls.queue_timeout_ms)
        tenant_cap = int(env.get("FIBRIC_POLICY_TENANT_MAX_IN_FLIGHT") or cls.tenant_max_in_flight)
        breaker_timeouts = int(env.get("FIBRIC_POLICY_BREAKER_TIMEOUTS") or cls.breaker_timeouts)
        cooldown = float(env.get("FIBRIC_POLICY_BREAKER_COOLDOWN_SECONDS") or cls.breaker_cooldown_seconds)
        if timeout_ms <= 0:
            raise ValueError("FIBRIC_POLICY_TIMEOUT_MS must be positive")
        if min(workers, queue_timeout_ms, tenant_cap, breaker_timeouts) < 0 or not 0 <= cooldown < 1e9:
            raise ValueError("FIBRIC_POLICY_WORKERS, _QUEUE_TIMEOUT_MS, _TENANT_MAX_IN_FLIGHT, "
                             "_BREAKER_TIMEOUTS and _BREAKER_COOLDOWN_SECONDS must not be negative")
        url = env.get("FIBRIC_OPA_URL") or None
        return cls(engine=engine, url=url, timeout_ms=timeout_ms, workers=workers,
                   queue_timeout_ms=queue_timeout_ms, tenant_max_in_flight=tenant_cap,
                   breaker_timeouts=breaker_timeouts, breaker_cooldown_seconds=cooldown,
                   token_env=env.get("FIBRIC_OPA_TOKEN_ENV") or None)


@dataclass(frozen=True)
class WebhookSettings:
    """How the webhook dispatcher delivers (docs/webhooks.md#configuration).

    `allow_http_and_private` (FIBRIC_WEBHOOKS_ALLOW_PRIVATE=1) is for
    development and tests only: it permits http:// URLs and loopback or
    private addresses, which production refuses (SSRF). `secret_key`
    (FIBRIC_SECRET_KEY, base64 of 32 bytes) encrypts signing secrets at rest;
    without it a key file `secret.key` in the data dir is created on first use.
    Replicas sharing a PostgreSQL store must share FIBRIC_SECRET_KEY.
    """

    allow_http_and_private: bool = field(default=False, metadata=about(
        "`1` allows `http://` webhook URLs and private or loopback addresses: development and tests "
        "only, never production.", env="FIBRIC_WEBHOOKS_ALLOW_PRIVATE"))
    secret_key: str | None = field(default=None, repr=False, metadata=about(
        "Base64 of 32 bytes sealing webhook signing secrets and tenant secrets at rest; replicas sharing "
        "a PostgreSQL store must share it.",
        env="FIBRIC_SECRET_KEY", default="`secret.key` in the data dir, made on first use"))
    connect_timeout_seconds: float = field(default=5.0, metadata=about(
        "Seconds to connect to a receiver (and TLS).", env="FIBRIC_WEBHOOKS_CONNECT_TIMEOUT"))
    read_timeout_seconds: float = field(default=10.0, metadata=about(
        "Seconds to wait for a receiver's answer; twice it caps the whole attempt.",
        env="FIBRIC_WEBHOOKS_READ_TIMEOUT"))
    max_response_bytes: int = field(default=64 * 1024, metadata=about(
        "At most this much of a receiver's answer is read.", default="64 KiB"))
    poll_seconds: float = field(default=0.25, metadata=about(
        "How often the dispatcher looks for new events and due retries.", env="FIBRIC_WEBHOOKS_POLL_SECONDS"))
    concurrency: int = field(default=16, metadata=about(
        "Webhook deliveries in flight per process (of which one tenant may hold "
        "`bulkheads.tenant_deliveries`).", env="FIBRIC_WEBHOOKS_CONCURRENCY"))
    rotation_grace_seconds: int = field(default=24 * 3600, metadata=about(
        "How long the old secret keeps signing after a rotation, unless the rotation says.",
        default="24 hours"))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WebhookSettings:
        allow = (env.get("FIBRIC_WEBHOOKS_ALLOW_PRIVATE") or "").strip().lower()
        if allow not in ("", "0", "1", "true", "false", "yes", "no"):
            raise ValueError(f"FIBRIC_WEBHOOKS_ALLOW_PRIVATE must be 1 or 0, not {allow!r}")
        connect = float(env.get("FIBRIC_WEBHOOKS_CONNECT_TIMEOUT") or cls.connect_timeout_seconds)
        read = float(env.get("FIBRIC_WEBHOOKS_READ_TIMEOUT") or cls.read_timeout_seconds)
        poll = float(env.get("FIBRIC_WEBHOOKS_POLL_SECONDS") or cls.poll_seconds)
        if min(connect, read, poll) <= 0:
            raise ValueError("FIBRIC_WEBHOOKS_* timeouts and poll interval must be positive")
        return cls(allow_http_and_private=allow in ("1", "true", "yes"),
                   secret_key=env.get("FIBRIC_SECRET_KEY") or None,
                   connect_timeout_seconds=connect, read_timeout_seconds=read, poll_seconds=poll,
                   concurrency=_count(env, "FIBRIC_WEBHOOKS_CONCURRENCY", cls.concurrency))


@dataclass(frozen=True)
class LlmSettings:
    """Named LLM routes an operator's `model` may name (docs/operators.md#llm-routes).

    FIBRIC_LLM_ROUTES_FILE names a JSON or YAML file `{routes: {<name>: {base_url,
    model, api_key_env, tenants, ...}}}`, read once at start-up. `fibric.proposers`
    validates each route (errors name the field); keys never appear in the file,
    only the name of the environment variable that holds each route's key.
    """

    routes_file: Path | None = field(default=None, metadata=about(
        "A JSON or YAML file of named LLM routes operators may use "
        "([operators.md](operators.md#llm-routes)).", env="FIBRIC_LLM_ROUTES_FILE"))
    routes: Mapping[str, Any] = field(default_factory=dict, metadata=about(  # name -> its raw config
        "The routes read from that file, by name."))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LlmSettings:
        raw_path = env.get("FIBRIC_LLM_ROUTES_FILE")
        if not raw_path:
            return cls()
        path = Path(raw_path)
        try:
            text = path.read_text(encoding="utf-8")
            document = json.loads(text) if path.suffix == ".json" else YAML(typ="safe").load(text)
        except (OSError, ValueError, YAMLError) as e:
            raise ValueError(f"FIBRIC_LLM_ROUTES_FILE {path}: cannot read: {e}") from e
        if not isinstance(document, dict) or set(document) != {"routes"} or not isinstance(
                document["routes"], dict):
            raise ValueError(f"FIBRIC_LLM_ROUTES_FILE {path}: expected a mapping with one key, 'routes', "
                             "mapping route names to their settings")
        return cls(routes_file=path, routes=document["routes"])


@dataclass(frozen=True)
class ExecutorSettings:
    """Leases and crash recovery of the executor (docs/executor.md#configuration)."""

    lease_seconds: float = field(default=30.0, metadata=about(
        "Lifetime of a lease and an execution claim, renewed every third of it: a dead holder's work "
        "is recovered after this.", env="FIBRIC_EXECUTOR_LEASE_SECONDS"))
    recovery_interval_seconds: float = field(default=5.0, metadata=about(
        "How often recovery looks for abandoned work and closes expired plans.",
        env="FIBRIC_EXECUTOR_RECOVERY_SECONDS"))
    plan_ttl_seconds: float = field(default=7 * 24 * 3600.0, metadata=about(
        "Seconds a proposed plan waits for a decision before it expires (0: never); an Operator's "
        "`spec.plan_ttl_seconds` overrides it.", env="FIBRIC_PLAN_TTL_SECONDS", default="7 days"))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ExecutorSettings:
        lease = float(env.get("FIBRIC_EXECUTOR_LEASE_SECONDS") or cls.lease_seconds)
        interval = float(env.get("FIBRIC_EXECUTOR_RECOVERY_SECONDS") or cls.recovery_interval_seconds)
        ttl_text = env.get("FIBRIC_PLAN_TTL_SECONDS")
        ttl = float(ttl_text) if ttl_text not in (None, "") else cls.plan_ttl_seconds
        if lease <= 0 or interval <= 0:
            raise ValueError(
                "FIBRIC_EXECUTOR_LEASE_SECONDS and FIBRIC_EXECUTOR_RECOVERY_SECONDS must be positive")
        if ttl < 0:
            raise ValueError("FIBRIC_PLAN_TTL_SECONDS must be 0 (plans never expire) or positive")
        return cls(lease_seconds=lease, recovery_interval_seconds=interval, plan_ttl_seconds=ttl)

    def plan_ttl(self, operator_seconds: int | None) -> timedelta | None:
        """How long a plan waits for a decision: the operator's own TTL, else this one (None: forever)."""
        seconds = operator_seconds if operator_seconds is not None else self.plan_ttl_seconds
        return timedelta(seconds=seconds) if seconds else None


@dataclass(frozen=True)
class TrustSettings:
    """What the installation lets tenants reach; nothing a tenant declares can widen it (docs/security.md).

    `connector_catalog` (FIBRIC_CONNECTOR_CATALOG, --connector-catalog) names a
    YAML file of connector transports a tenant's Connector may name with
    `transport.catalog`: the only way a tenant's connector starts a process.
    `egress_allow` (FIBRIC_EGRESS_ALLOW, --egress-allow; comma-separated host
    names, `*.domain`, IPs and CIDRs) lists the private or loopback places an
    HTTP connector or webhook of a tenant may reach, over http or https.
    """

    connector_catalog: Path | None = field(default=None, metadata=about(
        "YAML file of the MCP servers tenants' connectors may name (`transport.catalog`).",
        env="FIBRIC_CONNECTOR_CATALOG", flag="--connector-catalog"))
    egress_allow: tuple[str, ...] = field(default=(), metadata=about(
        "Hosts, `*.domain`s, IPs and CIDRs tenants' HTTP connectors and webhooks may reach although "
        "private or loopback; comma-separated in the variable, the flag repeated.",
        env="FIBRIC_EGRESS_ALLOW", flag="--egress-allow"))

    @classmethod
    def from_env(cls, env: Mapping[str, str], catalog: object = None, egress: object = None) -> TrustSettings:
        path = catalog if catalog is not None else env.get("FIBRIC_CONNECTOR_CATALOG")
        if egress is None:
            entries = tuple(e.strip() for e in (env.get("FIBRIC_EGRESS_ALLOW") or "").split(","))
        else:
            entries = tuple(str(e).strip() for e in egress)  # type: ignore[attr-defined]
        return cls(connector_catalog=Path(str(path)) if path else None,
                   egress_allow=tuple(e for e in entries if e))


@dataclass(frozen=True)
class BulkheadSettings:
    """Pools and per-tenant caps, so no tenant's slow dependency stalls another's loop (docs/operations.md).

    Each kind of blocking work has its own bounded thread pool (fibric/threads.py);
    DNS runs on the event loop with a deadline per lookup (fibric/trust/resolver.py);
    a tenant may hold only so many webhook deliveries, connector calls and operator
    runs at once (in this process: N replicas give a tenant N times each cap); a
    SIGTERM ends the process within `shutdown_seconds`, whatever is in flight
    (recovery finishes what was interrupted).
    """

    executor_threads: int = field(default=8, metadata=about(
        "Threads for the executor's and operator runs' store work and decisions.",
        env="FIBRIC_EXECUTOR_THREADS"))
    delivery_threads: int = field(default=4, metadata=about(
        "Threads for the webhook dispatcher's store work.", env="FIBRIC_DELIVERY_THREADS"))
    connector_threads: int = field(default=4, metadata=about(
        "Threads for the connector runtime's pin and secret reads.", env="FIBRIC_CONNECTOR_THREADS"))
    controller_threads: int = field(default=4, metadata=about(
        "Threads for reconciles, the folder watcher, the scheduler and recovery.",
        env="FIBRIC_CONTROLLER_THREADS"))
    dns_timeout_ms: int = field(default=2000, metadata=about(
        "Deadline of one DNS lookup of a tenant's host or an LLM route's provider, in milliseconds.",
        env="FIBRIC_DNS_TIMEOUT_MS"))
    dns_nameservers: tuple[str, ...] = field(default=(), metadata=about(
        "Name servers for tenants' hosts and LLM routes' providers, `ip[:port],...`.",
        env="FIBRIC_DNS_NAMESERVERS",
        default="those of `/etc/resolv.conf`"))
    tenant_deliveries: int = field(default=4, metadata=about(
        "Webhook deliveries one tenant may have in flight.", env="FIBRIC_TENANT_DELIVERIES"))
    tenant_connector_calls: int = field(default=16, metadata=about(
        "Tool calls one tenant may have in flight.", env="FIBRIC_TENANT_CONNECTOR_CALLS"))
    run_concurrency: int = field(default=4, metadata=about(
        "Operator runs at once per process.", env="FIBRIC_RUN_CONCURRENCY"))
    tenant_runs: int = field(default=2, metadata=about(
        "Operator runs one tenant may have at once, of `run_concurrency`.", env="FIBRIC_TENANT_RUNS"))
    shutdown_seconds: float = field(default=10.0, metadata=about(
        "Longest time from SIGTERM to exit, whatever is in flight (recovery finishes it).",
        env="FIBRIC_SHUTDOWN_SECONDS"))

    @property
    def pool_sizes(self) -> dict[str, int]:
        return {"executor": self.executor_threads, "delivery": self.delivery_threads,
                "connectors": self.connector_threads, "controller": self.controller_threads}

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BulkheadSettings:
        def count(name: str, default: int) -> int:
            return _count(env, name, default)

        shutdown = float(env.get("FIBRIC_SHUTDOWN_SECONDS") or cls.shutdown_seconds)
        if not 0 < shutdown < 3600:
            raise ValueError("FIBRIC_SHUTDOWN_SECONDS must be more than 0 and less than 3600")
        servers = tuple(s.strip() for s in (env.get("FIBRIC_DNS_NAMESERVERS") or "").split(",") if s.strip())
        return cls(
            executor_threads=count("FIBRIC_EXECUTOR_THREADS", cls.executor_threads),
            delivery_threads=count("FIBRIC_DELIVERY_THREADS", cls.delivery_threads),
            connector_threads=count("FIBRIC_CONNECTOR_THREADS", cls.connector_threads),
            controller_threads=count("FIBRIC_CONTROLLER_THREADS", cls.controller_threads),
            dns_timeout_ms=count("FIBRIC_DNS_TIMEOUT_MS", cls.dns_timeout_ms),
            dns_nameservers=servers,
            tenant_deliveries=count("FIBRIC_TENANT_DELIVERIES", cls.tenant_deliveries),
            tenant_connector_calls=count("FIBRIC_TENANT_CONNECTOR_CALLS", cls.tenant_connector_calls),
            run_concurrency=count("FIBRIC_RUN_CONCURRENCY", cls.run_concurrency),
            tenant_runs=count("FIBRIC_TENANT_RUNS", cls.tenant_runs),
            shutdown_seconds=shutdown,
        )


@dataclass(frozen=True)
class Settings:
    store: StoreSettings = field(default_factory=StoreSettings, metadata=section(
        "Store and ledger", "Where desired state, receipts and the auditors' sealed ledger live "
        "([receipts.md](receipts.md#replicas), [deploy.md](deploy.md))."))
    server: ServerSettings = field(default_factory=ServerSettings, metadata=section(
        "Server", "Where the API listens, and how much it takes at once ([api.md](api.md#performance))."))
    controller: ControllerSettings = field(default_factory=ControllerSettings, metadata=section(
        "Controller", "The reconcile loop, and the specs folder `fibric serve` applies."))
    reseller_id: str = field(default="rs_fibric", metadata=about(
        "Reseller of the tenants this installation creates (the first start's, `fibric admin tenant "
        "create`'s)."))
    rate_limits: RateLimitSettings = field(default_factory=RateLimitSettings, metadata=section(
        "Rate limits", "Requests per minute per tenant and route class ([api.md](api.md))."))
    policies: PolicySettings = field(default_factory=PolicySettings, metadata=section(
        "Policies", "Which engine evaluates Rego, and how the embedded one is bounded "
        "([policies.md](policies.md#configuration))."))
    executor: ExecutorSettings = field(default_factory=ExecutorSettings, metadata=section(
        "Executor", "Leases, crash recovery and plan expiry ([executor.md](executor.md#configuration))."))
    webhooks: WebhookSettings = field(default_factory=WebhookSettings, metadata=section(
        "Webhooks", "How deliveries are made, and the key sealing signing secrets "
        "([webhooks.md](webhooks.md#configuration))."))
    llm: LlmSettings = field(default_factory=LlmSettings, metadata=section(
        "LLM routes", "The models operators may name ([operators.md](operators.md#llm-routes))."))
    trust: TrustSettings = field(default_factory=TrustSettings, metadata=section(
        "Trust boundary", "What the installation lets tenants reach; nothing a tenant declares widens "
        "it ([security.md](security.md))."))
    bulkheads: BulkheadSettings = field(default_factory=BulkheadSettings, metadata=section(
        "Bulkheads", "Bounded pools and per-tenant caps, so one tenant's slow dependency cannot stall "
        "another's ([operations.md](operations.md#bulkheads)). Every bound is per process: with N "
        "replicas a tenant may hold N times each cap."))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from FIBRIC_* variables, with explicit (flag) overrides winning.

        Overrides use dotted group names, e.g. `store_url=...`, `server_port=...`.
        """
        env = dict(os.environ if environ is None else environ)

        def pick(key: str, env_name: str) -> object:
            value = overrides.get(key)
            return value if value is not None else env.get(env_name)

        data_dir = pick("data_dir", "FIBRIC_DATA_DIR")
        store_url = pick("store_url", "FIBRIC_STORE")
        host = pick("host", "FIBRIC_HOST")
        port = pick("port", "FIBRIC_PORT")
        resync = pick("resync_seconds", "FIBRIC_RESYNC_SECONDS")
        specs_dir = pick("specs_dir", "FIBRIC_SPECS")
        watch = overrides.get("watch")
        store = StoreSettings(
            data_dir=Path(str(data_dir)) if data_dir else StoreSettings.data_dir,
            url=str(store_url) if store_url else None,
            ledger_catalog=env.get("FIBRIC_LEDGER_CATALOG") or None,
            ledger_data_path=env.get("FIBRIC_LEDGER_DATA_PATH") or None,
            ledger_schema=env.get("FIBRIC_LEDGER_SCHEMA") or None,
        )
        server = ServerSettings(
            host=str(host) if host else ServerSettings.host,
            port=int(str(port)) if port not in (None, "") else ServerSettings.port,  # 0: any free port
            worker_threads=_worker_threads(env.get("FIBRIC_WORKER_THREADS")),
            slow_threads=_count(env, "FIBRIC_SLOW_THREADS", ServerSettings.slow_threads),
        )
        controller = ControllerSettings(
            resync_seconds=float(str(resync)) if resync else ControllerSettings.resync_seconds,
            specs_dir=Path(str(specs_dir)) if specs_dir else None,
            watch=bool(watch),
            sync_self_heal=_switch("FIBRIC_SYNC_SELF_HEAL", env.get("FIBRIC_SYNC_SELF_HEAL")),
        )
        return cls(store=store, server=server, controller=controller,
                   rate_limits=RateLimitSettings.from_env(env), policies=PolicySettings.from_env(env),
                   executor=ExecutorSettings.from_env(env),
                   webhooks=WebhookSettings.from_env(env),
                   llm=LlmSettings.from_env(env),
                   trust=TrustSettings.from_env(env, overrides.get("connector_catalog"),
                                                overrides.get("egress_allow")),
                   bulkheads=BulkheadSettings.from_env(env))


def _switch(name: str, value: str | None) -> bool:
    """`on`/`off` (also true/false, 1/0, yes/no); unset is off."""
    text = (value or "").strip().lower()
    if text in ("", "off", "false", "0", "no"):
        return False
    if text in ("on", "true", "1", "yes"):
        return True
    raise ValueError(f"{name} must be on or off, not {value!r}")


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    """A whole number of at least 1 from `name`, or `default` when unset; ValueError naming it."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name} must be a whole number, at least 1, not {raw!r}")
    return int(raw)


def _worker_threads(value: str | None) -> int | None:
    if not value:
        return None
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError(f"FIBRIC_WORKER_THREADS must be a whole number, at least 1, not {value!r}")
    return int(value)


# --- The configuration reference (docs/configuration.md) ----------------------------------------

@dataclass(frozen=True)
class Entry:
    """One row of the configuration reference."""

    setting: str  # its path in Settings ("server.port"), or the file reading the variable
    env: str | None
    flag: str | None
    default: str
    meaning: str


CLIENT = Section("Client commands", "Read by every command that talks to a server (`fibric apply`, `get`, "
                 "`plans`, ...); the flags are `fibric`'s own, before the command.")
SERVE = Section("fibric serve", "Flags of `fibric serve` that are not settings.")
OBSERVABILITY = Section("Logs and metrics", "How `fibric serve` logs ([operations.md](operations.md#logs)) "
                        "and counts ([operations.md](operations.md#metrics)).")
TESTS = Section("Tests only", "Never set these in production.")
GENERAL = Section("Installation", "Fixed for an installation.")

# Variables read outside Settings, by the module named (each reads its own, once): so that the
# reference lists every FIBRIC_* variable Fibric reads, and the test can hold it to that.
ELSEWHERE: tuple[tuple[Section, Entry], ...] = (
    (CLIENT, Entry("fibric/cli/root.py", "FIBRIC_URL", "--url", "`http://127.0.0.1:8080`",
                   "Base URL of the Fibric API.")),
    (CLIENT, Entry("fibric/cli/root.py", "FIBRIC_KEY", "--key", "unset",
                   "API key, `sk_live_...`; prefer the variable: a flag shows in process lists.")),
    (CLIENT, Entry("fibric/cli/root.py", "FIBRIC_TIMEOUT", "--timeout", "`30`",
                   "Seconds to wait for each API response.")),
    (SERVE, Entry("fibric/cli/serve.py", None, "--tenant", "`default`",
                  "Tenant that owns the `--specs` folder.")),
    (OBSERVABILITY, Entry("fibric/logs.py", "FIBRIC_LOG_FORMAT", None, "`text`",
                          "`text` for people, or `json`: one object per line, with each record's fields.")),
    (OBSERVABILITY, Entry("fibric/metrics.py", "FIBRIC_METRICS", None, "`on`",
                          "`on` serves `/metrics`; `off` serves none and takes no per-request sample; "
                          "`tenants` also labels the per-tenant metrics with the tenant id.")),
    (OBSERVABILITY, Entry("fibric/tracing.py", "OTEL_EXPORTER_OTLP_ENDPOINT", None, "unset",
                          "A collector's base URL: spans are exported over OTLP/HTTP to `<it>/v1/traces` "
                          "(`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: the full URL); needs the `otel` extra "
                          "([operations.md](operations.md#traces)).")),
    (OBSERVABILITY, Entry("fibric/tracing.py", "OTEL_SERVICE_NAME", None, "`fibric`",
                          "The service name on exported spans.")),
    (TESTS, Entry("fibric/controller/crashpoints.py", "FIBRIC_CRASHPOINT", None, "unset",
                  "`<point>[@<capability>]`: the process kills itself there "
                  "([executor.md](executor.md#crash-safety)).")),
    (TESTS, Entry("fibric/timefmt.py", "FIBRIC_TEST_CLOCK_OFFSET_SECONDS", None, "`0`",
                  "This process's clock runs this many seconds off (leases and claims read the "
                  "database's clock).")),
)


def reference() -> list[tuple[Section, list[Entry]]]:
    """Every setting and variable, by section: Settings' groups in order, its own fields, then ELSEWHERE."""
    groups = [g for g in dataclasses.fields(Settings) if SECTION in g.metadata]
    sections = [(g.metadata[SECTION],
                 [_entry(f"{g.name}.{f.name}", f) for f in dataclasses.fields(_default(g))]) for g in groups]
    sections.append((GENERAL, [_entry(f.name, f) for f in dataclasses.fields(Settings) if f not in groups]))
    for heading in dict.fromkeys(heading for heading, _ in ELSEWHERE):
        sections.append((heading, [entry for h, entry in ELSEWHERE if h == heading]))
    return sections


def _entry(path: str, item: dataclasses.Field[Any]) -> Entry:
    if ABOUT not in item.metadata:
        raise TypeError(f"setting {path} has no about(...) in its metadata: say what it means")
    told: About = item.metadata[ABOUT]
    value = _default(item)
    shown = "unset" if value is None else _literal(value)
    if told.default:  # what the default means; an unset or empty one is only that
        shown = f"{shown}: {told.default}" if value not in (None, (), {}) else told.default
    return Entry(path, told.env, told.flag, shown, told.meaning)


def _default(item: dataclasses.Field[Any]) -> Any:
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return item.default


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "off" if not value else "on"
    if value in ((), {}):
        return "none"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def markdown() -> str:
    """docs/configuration.md: every setting with its variable, `serve` flag, default and meaning."""
    lines = [
        "# Configuration",
        "",
        "<!-- Rendered from fibric/settings.py: `python -m fibric.settings --markdown > "
        "docs/configuration.md`.",
        "     tests/cli/test_cli_config.py fails when the page differs: edit the settings, not the page. -->",
        "",
        "`fibric serve` reads its settings once, at start: a flag wins over its `FIBRIC_*` variable, which",
        "wins over the default. A value that cannot be what it names stops `serve` with exit code 2,",
        "naming the variable. At start `serve` logs one line with what it runs with (version, store,",
        "ledger, policy engine, address and limits; never a password) ([operations.md](operations.md)).",
    ]
    for heading, entries in reference():
        lines += ["", f"## {heading.title}", "", heading.intro, "",
                  "| setting | variable | flag | default | meaning |", "|---|---|---|---|---|"]
        for entry in entries:
            cells = [f"read by {entry.setting}" if "/" in entry.setting else f"`{entry.setting}`",
                     f"`{entry.env}`" if entry.env else "", f"`{entry.flag}`" if entry.flag else "",
                     entry.default, entry.meaning]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m fibric.settings --markdown > docs/configuration.md")
    sys.stdout.write(markdown())
