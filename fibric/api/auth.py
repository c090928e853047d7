"""Who is calling, from the API key alone, and whether the key may do this.

The tenant and reseller of every request come from the key
(`StateStore.authenticate`), never from the body or the path. Each route
declares the one scope it needs with `Depends(auth.require("operators:read"))`;
routes whose scope depends on the body (apply, specs) take `authenticated`
and call `check` once they know which kinds are involved.

The key is resolved before routing, by the admission middleware, which needs
the tenant to count its rate limit. A key's tenant and scopes never change,
so admission remembers them; what can change is whether the key is still
valid (revoked). Every request relies on a store check of its key that
started after it arrived (admission.py says why one check may serve many).
When admission answered from memory, that check is still owed: it runs in
the thread that runs the endpoint (routing.Route), so a request hops to a
worker thread once, not twice. Until the check has passed, nothing the
endpoint does runs; an error answered before the endpoint (a bad query, a
missing scope) first settles the check, so a revoked key always reads 401.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import Annotated

from fastapi import Depends, Request

from fibric import errors, store
from fibric.api import context, workers

# Resource name in scopes and URLs for each kind: Policy -> "policies:read".
RESOURCE = {"Operator": "operators", "Connector": "connectors", "Policy": "policies",
            "Webhook": "webhooks"}

# Keys of the request state where admission.Admission leaves what it found.
PRINCIPAL = "principal"
FAILURE = "auth_failure"
VERIFY = "auth_verify"  # the store check a principal from memory still owes

Verification = Callable[[], None]  # re-checks the key against the store; raises Unauthenticated

# Per request (each request runs in its own task, so its own context):
# whether the route runs owed checks in its endpoint's thread, and the check owed.
DEFERRABLE: ContextVar[bool] = ContextVar("fibric_auth_deferrable", default=False)
PENDING: ContextVar[Verification | None] = ContextVar("fibric_auth_pending", default=None)


def principal_from_header(state: store.StateStore, header: str) -> store.Principal:
    """The principal of an Authorization header's bearer key; Unauthenticated for anything else."""
    return state.authenticate(bearer_secret(header))


def bearer_secret(header: str) -> str:
    """The secret of `Bearer <secret>`; Unauthenticated if the header is not that."""
    scheme, _, secret = header.strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret or " " in secret:
        raise errors.Unauthenticated(
            "Malformed Authorization header: expected 'Bearer sk_live_...'."
        )
    return secret


async def authenticated(request: Request) -> store.Principal:
    """The principal of the request's bearer key; 401 for anything else.

    (The bearer scheme is declared in the OpenAPI document by openapi.py, not
    here, so a request resolves one dependency for its key, not three.)
    """
    principal: store.Principal | None = getattr(request.state, PRINCIPAL, None)
    if principal is not None:
        verify: Verification | None = getattr(request.state, VERIFY, None)
        if verify is not None:
            setattr(request.state, VERIFY, None)
            if DEFERRABLE.get():
                PENDING.set(verify)  # routing.Route runs it before the endpoint
            else:
                await workers.run(verify)
        return principal
    failure: errors.FibricError | None = getattr(request.state, FAILURE, None)
    if failure is not None:
        raise failure
    header = request.headers.get("authorization")
    if not header:
        raise errors.Unauthenticated("Missing API key: send 'Authorization: Bearer sk_live_...'.")
    # Only an app built without the admission middleware gets here.
    ctx: context.Context = request.app.state.fibric
    return await workers.run(principal_from_header, ctx.state, header)


Authenticated = Annotated[store.Principal, Depends(authenticated)]


def check(principal: store.Principal, scopes: Iterable[str]) -> None:
    """403 insufficient_scope naming the first scope the key lacks."""
    for scope in scopes:
        if scope not in principal.scopes:
            raise errors.InsufficientScope(scope)


def require(scope: str) -> Callable[[Request], Awaitable[store.Principal]]:
    """A dependency: the authenticated principal, provided its key carries `scope`."""

    async def dependency(request: Request) -> store.Principal:
        principal = await authenticated(request)
        if scope not in principal.scopes:
            await settle()  # a revoked key is 401, whatever its scopes
        check(principal, [scope])
        return principal

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    return dependency


def run_pending() -> None:
    """Run the check this request owes, if any (in a worker thread: it queries the store)."""
    verify = PENDING.get()
    if verify is not None:
        PENDING.set(None)
        verify()


async def settle() -> None:
    """Run the owed check now, from the event loop (before answering an error)."""
    verify = PENDING.get()
    if verify is not None:
        PENDING.set(None)
        await workers.run(verify)


def scope_for(kind: str, access: str) -> str:
    """('Policy', 'write') -> 'policies:write'."""
    return f"{RESOURCE[kind]}:{access}"
