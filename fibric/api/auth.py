"""Who is calling, from the API key alone, and whether the key may do this.

The tenant and reseller of every request come from the key
(`StateStore.authenticate`), never from the body or the path. Each route
declares the one scope it needs with `Depends(auth.require("operators:read"))`;
routes whose scope depends on the body (apply, specs) take `authenticated`
and call `check` once they know which kinds are involved.

The dependencies are sync functions: `authenticate` queries the store, and
FastAPI runs sync dependencies in its thread pool, off the event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fibric import errors, store
from fibric.api import context

# Declares the scheme in OpenAPI (the docs page's "Authorize" button); the
# header itself is parsed below so each failure gets its own message.
_bearer_scheme = HTTPBearer(
    auto_error=False, bearerFormat="sk_live_...", description="A secret API key of one tenant."
)

# Resource name in scopes and URLs for each kind: Policy -> "policies:read".
RESOURCE = {"Operator": "operators", "Connector": "connectors", "Policy": "policies",
            "Webhook": "webhooks"}


def authenticated(
    request: Request,
    ctx: context.Ctx,
    _scheme: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer_scheme)],
) -> store.Principal:
    """The principal of the request's bearer key; 401 for anything else."""
    header = request.headers.get("authorization")
    if not header:
        raise errors.Unauthenticated("Missing API key: send 'Authorization: Bearer sk_live_...'.")
    scheme, _, secret = header.strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret or " " in secret:
        raise errors.Unauthenticated(
            "Malformed Authorization header: expected 'Bearer sk_live_...'."
        )
    return ctx.state.authenticate(secret)


Authenticated = Annotated[store.Principal, Depends(authenticated)]


def check(principal: store.Principal, scopes: Iterable[str]) -> None:
    """403 insufficient_scope naming the first scope the key lacks."""
    for scope in scopes:
        if scope not in principal.scopes:
            raise errors.InsufficientScope(scope)


def require(scope: str) -> Callable[[store.Principal], Awaitable[store.Principal]]:
    """A dependency: the authenticated principal, provided its key carries `scope`."""

    # async: a set lookup, no reason to hop to the thread pool
    async def dependency(principal: Authenticated) -> store.Principal:
        check(principal, [scope])
        return principal

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    return dependency


def scope_for(kind: str, access: str) -> str:
    """('Policy', 'write') -> 'policies:write'."""
    return f"{RESOURCE[kind]}:{access}"
