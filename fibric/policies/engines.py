"""Pick the engine the settings ask for: embedded (default) or an OPA server."""

from __future__ import annotations

from fibric import settings
from fibric.policies import embedded, engine, opa

KINDS = ("embedded", "opa")


def open_engine(
    kind: str = "embedded",
    *,
    url: str | None = None,
    timeout: float = 0.1,
    workers: int = 0,
    token: str | None = None,
    queue_timeout: float | None = None,
    tenant_max_in_flight: int = 0,
    breaker_timeouts: int = 3,
    breaker_cooldown: float = 30.0,
) -> engine.Engine:
    """An engine per `policies.engine` (embedded | opa); ValueError on a bad combination.

    The worker, queue, tenant and breaker arguments are the embedded engine's
    (see EmbeddedEngine); OPA bounds a decision by its HTTP timeout alone.
    """
    if kind == "embedded":
        return embedded.EmbeddedEngine(
            timeout=timeout, workers=workers, queue_timeout=queue_timeout,
            tenant_max_in_flight=tenant_max_in_flight, breaker_timeouts=breaker_timeouts,
            breaker_cooldown=breaker_cooldown,
        )
    if kind == "opa":
        if not url:
            raise ValueError("policies.engine 'opa' needs policies.url (e.g. http://127.0.0.1:8181)")
        return opa.OpaEngine(url, timeout=timeout, token=token)
    raise ValueError(f"unknown policies.engine {kind!r}; expected one of: {', '.join(KINDS)}")


def open_configured(config: settings.PolicySettings, *, token: str | None = None) -> engine.Engine:
    """The engine `Settings.policies` describes, every knob passed (docs/policies.md#configuration)."""
    return open_engine(
        config.engine, url=config.url, timeout=config.timeout_ms / 1000, workers=config.workers,
        token=token,
        queue_timeout=config.queue_timeout_ms / 1000 if config.queue_timeout_ms else None,
        tenant_max_in_flight=config.tenant_max_in_flight, breaker_timeouts=config.breaker_timeouts,
        breaker_cooldown=config.breaker_cooldown_seconds,
    )
