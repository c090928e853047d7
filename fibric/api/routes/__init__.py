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
)

__all__ = ["ROUTERS"]
