"""Pick the engine the settings ask for: embedded (default) or an OPA server."""

from __future__ import annotations

from fibric.policies import embedded, engine, opa

KINDS = ("embedded", "opa")


def open_engine(
    kind: str = "embedded",
    *,
    url: str | None = None,
    timeout: float = 0.1,
    workers: int = 0,
    token: str | None = None,
) -> engine.Engine:
    """An engine per `policies.engine` (embedded | opa); ValueError on a bad combination."""
    if kind == "embedded":
        return embedded.EmbeddedEngine(timeout=timeout, workers=workers)
    if kind == "opa":
        if not url:
            raise ValueError("policies.engine 'opa' needs policies.url (e.g. http://127.0.0.1:8181)")
        return opa.OpaEngine(url, timeout=timeout, token=token)
    raise ValueError(f"unknown policies.engine {kind!r}; expected one of: {', '.join(KINDS)}")
