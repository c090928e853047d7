"""One module per resource; `ROUTERS` is what the app mounts, in documentation order."""

from fibric.api.routes import apply, connectors, operators, policies, specs, webhooks

ROUTERS = (
    operators.router,
    connectors.router,
    webhooks.router,
    policies.router,
    specs.router,
    apply.router,
)

__all__ = ["ROUTERS"]
