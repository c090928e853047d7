"""One settings object, read once from flags and FIBRIC_* variables, then passed down.

Nothing in Fibric reads the environment for configuration after start-up;
components receive the part of `Settings` they need.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError


@dataclass(frozen=True)
class StoreSettings:
    """Where desired state lives: a data dir (SQLite) or a PostgreSQL URL."""

    data_dir: Path = Path(".fibric")
    url: str | None = None  # postgresql://... ; None means SQLite in data_dir
    # The auditors' sealed ledger (docs/receipts.md#replicas). Default: a DuckLake in data_dir, for one
    # process. Replicas share one: FIBRIC_LEDGER_CATALOG, DuckLake's catalog ("postgres:dbname=fibric
    # host=db"), FIBRIC_LEDGER_DATA_PATH, the folder its Parquet files go to (every replica's mount), and
    # FIBRIC_LEDGER_SCHEMA, the PostgreSQL schema holding the catalog's tables.
    ledger_catalog: str | None = None
    ledger_data_path: str | None = None
    ledger_schema: str | None = None

    @property
    def location(self) -> str:
        return self.url or str(self.data_dir / "state.db")


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 8 * 1_048_576  # an apply of thousands of specs fits
    # FIBRIC_WORKER_THREADS: threads for quick blocking work (store queries); None is one
    # per CPU (at least 2) on SQLite, min(32, CPUs + 4) on PostgreSQL. See docs/api.md#performance.
    worker_threads: int | None = None


@dataclass(frozen=True)
class ControllerSettings:
    resync_seconds: float = 30.0  # periodic full reconcile, for writes made by other processes
    max_backoff_seconds: float = 300.0
    specs_dir: Path | None = None
    watch: bool = False
    apply_set: str = "serve"  # the set `--specs` applies and prunes


@dataclass(frozen=True)
class RateLimitSettings:
    """Requests per minute per tenant and route class (the reference's defaults), and where counts live.

    `overrides` maps a tenant id to its own ceilings, e.g. {"t_1": {"events": 1200}};
    env FIBRIC_RATE_LIMIT_OVERRIDES="t_1:events=1200,reads=5000;t_2:writes=300".
    Counters live in this process unless `redis_url` (FIBRIC_REDIS_URL) is set,
    which replicas must share so a tenant's budget is one budget.
    """

    reads_per_minute: int = 1000
    writes_per_minute: int = 120
    events_per_minute: int = 600
    overrides: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    redis_url: str | None = None

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

    engine: str = "embedded"  # FIBRIC_POLICY_ENGINE: "embedded" | "opa"
    url: str | None = None  # FIBRIC_OPA_URL, http(s)://host:port; required for "opa"
    timeout_ms: int = 100  # FIBRIC_POLICY_TIMEOUT_MS: one decision's budget; over it is BLOCK
    workers: int = 0  # FIBRIC_POLICY_WORKERS: embedded worker processes; 0 = max(2, CPUs)
    queue_timeout_ms: int = 0  # FIBRIC_POLICY_QUEUE_TIMEOUT_MS: longest wait for a worker; 0 = 1000 ms
    tenant_max_in_flight: int = 0  # FIBRIC_POLICY_TENANT_MAX_IN_FLIGHT: per tenant; 0 = workers - 1 (min 1)
    breaker_timeouts: int = 3  # FIBRIC_POLICY_BREAKER_TIMEOUTS: consecutive timeouts that open; 0 = never
    breaker_cooldown_seconds: float = 30.0  # FIBRIC_POLICY_BREAKER_COOLDOWN_SECONDS: open before a probe
    token_env: str | None = None  # FIBRIC_OPA_TOKEN_ENV: the variable holding OPA's bearer token

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

    allow_http_and_private: bool = False
    secret_key: str | None = field(default=None, repr=False)
    connect_timeout_seconds: float = 5.0  # FIBRIC_WEBHOOKS_CONNECT_TIMEOUT
    read_timeout_seconds: float = 10.0  # FIBRIC_WEBHOOKS_READ_TIMEOUT; also caps the whole attempt x2
    max_response_bytes: int = 64 * 1024  # read at most this much of a receiver's answer
    poll_seconds: float = 0.25  # FIBRIC_WEBHOOKS_POLL_SECONDS: how often the dispatcher looks for work
    concurrency: int = 16  # deliveries in flight per process
    rotation_grace_seconds: int = 24 * 3600  # the old secret keeps signing this long after a rotation

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
                   connect_timeout_seconds=connect, read_timeout_seconds=read, poll_seconds=poll)


@dataclass(frozen=True)
class LlmSettings:
    """Named LLM routes an operator's `model` may name (docs/operators.md#llm-routes).

    FIBRIC_LLM_ROUTES_FILE names a JSON or YAML file `{routes: {<name>: {base_url,
    model, api_key_env, tenants, ...}}}`, read once at start-up. `fibric.proposers`
    validates each route (errors name the field); keys never appear in the file,
    only the name of the environment variable that holds each route's key.
    """

    routes_file: Path | None = None
    routes: Mapping[str, Any] = field(default_factory=dict)  # route name -> its raw config

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

    lease_seconds: float = 30.0  # FIBRIC_EXECUTOR_LEASE_SECONDS: a dead holder's leases expire after this
    recovery_interval_seconds: float = 5.0  # FIBRIC_EXECUTOR_RECOVERY_SECONDS: scan for abandoned work
    # FIBRIC_PLAN_TTL_SECONDS: a proposed plan nobody decides on expires after this (0: never);
    # an Operator's spec.plan_ttl_seconds overrides it.
    plan_ttl_seconds: float = 7 * 24 * 3600.0

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

    connector_catalog: Path | None = None
    egress_allow: tuple[str, ...] = ()

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
    runs at once; a SIGTERM ends the process within `shutdown_seconds`, whatever is
    in flight (recovery finishes what was interrupted).
    """

    executor_threads: int = 8  # FIBRIC_EXECUTOR_THREADS: the executor's and runs' store work and decisions
    delivery_threads: int = 4  # FIBRIC_DELIVERY_THREADS: the webhook dispatcher's store work
    connector_threads: int = 4  # FIBRIC_CONNECTOR_THREADS: connector pin and secret reads
    controller_threads: int = 4  # FIBRIC_CONTROLLER_THREADS: reconciles, watch, scheduler, recovery
    dns_timeout_ms: int = 2000  # FIBRIC_DNS_TIMEOUT_MS: one lookup's deadline
    dns_nameservers: tuple[str, ...] = ()  # FIBRIC_DNS_NAMESERVERS: "ip[:port],..."; default resolv.conf's
    tenant_deliveries: int = 4  # FIBRIC_TENANT_DELIVERIES: a tenant's webhook deliveries in flight
    tenant_connector_calls: int = 16  # FIBRIC_TENANT_CONNECTOR_CALLS: a tenant's tool calls in flight
    tenant_runs: int = 2  # FIBRIC_TENANT_RUNS: a tenant's operator runs at once
    shutdown_seconds: float = 10.0  # FIBRIC_SHUTDOWN_SECONDS: SIGTERM to exit, at most

    @property
    def pool_sizes(self) -> dict[str, int]:
        return {"executor": self.executor_threads, "delivery": self.delivery_threads,
                "connectors": self.connector_threads, "controller": self.controller_threads}

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BulkheadSettings:
        def count(name: str, default: int) -> int:
            raw = (env.get(name) or "").strip()
            if not raw:
                return default
            if not raw.isdigit() or int(raw) < 1:
                raise ValueError(f"{name} must be a whole number, at least 1, not {raw!r}")
            return int(raw)

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
            tenant_runs=count("FIBRIC_TENANT_RUNS", cls.tenant_runs),
            shutdown_seconds=shutdown,
        )


@dataclass(frozen=True)
class Settings:
    store: StoreSettings = field(default_factory=StoreSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    controller: ControllerSettings = field(default_factory=ControllerSettings)
    reseller_id: str = "rs_fibric"
    rate_limits: RateLimitSettings = field(default_factory=RateLimitSettings)
    policies: PolicySettings = field(default_factory=PolicySettings)
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    llm: LlmSettings = field(default_factory=LlmSettings)
    trust: TrustSettings = field(default_factory=TrustSettings)
    bulkheads: BulkheadSettings = field(default_factory=BulkheadSettings)

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
        )
        controller = ControllerSettings(
            resync_seconds=float(str(resync)) if resync else ControllerSettings.resync_seconds,
            specs_dir=Path(str(specs_dir)) if specs_dir else None,
            watch=bool(watch),
        )
        return cls(store=store, server=server, controller=controller,
                   rate_limits=RateLimitSettings.from_env(env), policies=PolicySettings.from_env(env),
                   executor=ExecutorSettings.from_env(env),
                   webhooks=WebhookSettings.from_env(env),
                   llm=LlmSettings.from_env(env),
                   trust=TrustSettings.from_env(env, overrides.get("connector_catalog"),
                                                overrides.get("egress_allow")),
                   bulkheads=BulkheadSettings.from_env(env))


def _worker_threads(value: str | None) -> int | None:
    if not value:
        return None
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError(f"FIBRIC_WORKER_THREADS must be a whole number, at least 1, not {value!r}")
    return int(value)
