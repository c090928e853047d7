"""One module per resource; `ROUTERS` is what the app mounts, in documentation order."""

from fibric.api.routes import (
    apply,
    audit,
    connectors,
    events,
    operators,
    plans,
    policies,
    receipts,
    runs,
    secrets,
    specs,
    sync,
    webhooks,
)

ROUTERS = (
    operators.router,
    connectors.router,
    events.router,
    plans.router,
    receipts.router,
    audit.router,
    runs.router,
    webhooks.router,
    policies.router,
    secrets.router,
    specs.router,
    apply.router,
    sync.router,
)

__all__ = ["ROUTERS"]
