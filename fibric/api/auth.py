"""Who is calling, from the API key alone, whether the key is still valid, and whether it may do this.

The one module that checks keys: the admission middleware, the idempotency
middleware, the route class, the approver page and the error handlers each
make one call here, and none of them decides on its own whether a key is
revoked.

The tenant and reseller of every request come from the key
(`StateStore.authenticate`), never from the body or the path. Each route
declares the one scope it needs with `Depends(auth.require("operators:read"))`;
routes whose scope depends on the body (apply, specs) take `authenticated`
and call `check` once they know which kinds are involved.

The key is resolved before routing, by the admission middleware, which needs
the tenant to count its rate limit (`Keys`, `admit`). A key's tenant and
scopes never change, so they are remembered after the first successful
lookup (`KeyMemory`); what can change is whether the key is still valid
(revoked). Every request relies on a store check of its key that started
after it arrived. When the key was recalled from memory, that check is
still owed: it runs in the thread that runs the endpoint (routing.Route), so
a request hops to a worker thread once, not twice. Until the check has
passed, nothing the endpoint does runs; an error answered before the endpoint
(a bad query, a missing scope) first settles the check, so a revoked key
always reads 401.

The owed check is shared: a request may rely on a check of its key that
*started after the request arrived* and found the key valid. That is as
strong as a check of its own: a request arriving after a revocation was
committed can only rely on checks that started later still, and those see
the revocation. Under load, one check serves every request that arrived
before it began, instead of each request paying for a store read (about a
seventh of the events route's throughput, bench/bench_api.py).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from contextvars import ContextVar
from typing import Annotated, Any

from fastapi import Depends, Request

from fibric import errors, store
from fibric.api import context, workers

# Resource name in scopes and URLs for each kind: Policy -> "policies:read".
RESOURCE = {"Operator": "operators", "Connector": "connectors", "Policy": "policies",
            "Webhook": "webhooks"}

# Keys of the request state where admission leaves what it found (`admit`).
PRINCIPAL = "principal"
FAILURE = "auth_failure"
VERIFY = "auth_verify"  # the store check a principal from memory still owes

Verification = Callable[[], None]  # re-checks the key against the store; raises Unauthenticated

# Per request (each request runs in its own task, so its own context):
# whether the route runs owed checks in its endpoint's thread, and the check owed.
DEFERRABLE: ContextVar[bool] = ContextVar("fibric_auth_deferrable", default=False)
PENDING: ContextVar[Verification | None] = ContextVar("fibric_auth_pending", default=None)


# --- the key itself ---------------------------------------------------------


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


class KeyMemory:
    """The principals of keys seen valid, by a hash of the secret; bounded, oldest forgotten first.

    With each, the start (monotonic) of the newest check that found the key still valid.
    """

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._known: dict[str, tuple[store.Principal, float]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> store.Principal | None:
        known = self._known.get(digest)
        return known[0] if known else None

    def remember(self, digest: str, principal: store.Principal, checked_at: float) -> None:
        with self._lock:
            self._known[digest] = (principal, checked_at)
            while len(self._known) > self.size:
                del self._known[next(iter(self._known))]

    def valid_since(self, digest: str, moment: float) -> bool:
        """Whether a check that started after `moment` found the key valid."""
        known = self._known.get(digest)
        return known is not None and known[1] > moment  # strictly: a tie proves nothing

    def checked(self, digest: str, started: float) -> None:
        """Record a check, started at `started`, that found the key valid."""
        with self._lock:
            known = self._known.get(digest)
            if known is not None and started > known[1]:
                self._known[digest] = (known[0], started)

    def forget(self, digest: str) -> None:
        with self._lock:
            self._known.pop(digest, None)


class Keys:
    """An app's keys: looked up in the store, recalled from memory, and the check a recalled key owes."""

    def __init__(self, state: store.StateStore, size: int = 10_000) -> None:
        self.state = state
        self.memory = KeyMemory(size)

    def authenticate(self, header: str) -> store.Principal:
        """The header's principal, from the store (blocking), remembered; Unauthenticated if none."""
        started = time.monotonic()
        principal = principal_from_header(self.state, header)
        self.memory.remember(digest(bearer_secret(header)), principal, started)
        return principal

    def recall(self, header: str | None) -> tuple[store.Principal, Verification] | None:
        """The key's principal from memory (no store read, so on the event loop) and the check that
        it is still valid the request now owes; None if this app has not seen the key valid."""
        if not header:
            return None
        try:
            key = digest(bearer_secret(header))
        except errors.Unauthenticated:
            return None
        principal = self.memory.get(key)
        return (principal, self.owed(header, key, principal)) if principal is not None else None

    def owed(self, header: str, key: str, principal: store.Principal) -> Verification:
        """The check a request that arrives now owes: satisfied by any check that starts later."""
        arrived = time.monotonic()

        def verify() -> None:
            if self.memory.valid_since(key, arrived):
                return
            started = time.monotonic()
            try:
                current = principal_from_header(self.state, header)
            except errors.Unauthenticated:
                # Revoked (or gone): forget it, so its requests stop counting against the tenant.
                self.memory.forget(key)
                raise
            if current != principal:  # cannot happen: a key's tenant and scopes are fixed
                self.memory.forget(key)
                raise errors.Unauthenticated("API key is not recognised")
            self.memory.checked(key, started)

        return verify


def digest(secret: str) -> str:
    """What the memory keeps of a secret: its hash (as the store does), never the secret."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


# --- what a request carries -------------------------------------------------


def admit(
    request_state: MutableMapping[str, Any],
    principal: store.Principal | None,
    failure: errors.FibricError | None,
    owed: Verification | None = None,
) -> None:
    """Leave in the request's state who is calling (or why no one is) and the key check it owes."""
    request_state[PRINCIPAL] = principal
    request_state[FAILURE] = failure
    if owed is not None:
        request_state[VERIFY] = owed


def take_owed(request_state: MutableMapping[str, Any]) -> Verification:
    """The request's owed key check, for a caller to run in its own worker-thread hop (a no-op if
    nothing is owed); on failure the caller hands the error to `refuse`."""
    owed: Verification | None = request_state.pop(VERIFY, None)
    return owed or _nothing_owed


def refuse(request_state: MutableMapping[str, Any], failure: errors.FibricError) -> None:
    """The key failed its check: the request has no principal, and its route answers `failure`."""
    request_state[PRINCIPAL], request_state[FAILURE] = None, failure


def _nothing_owed() -> None:
    pass


# --- routes -----------------------------------------------------------------


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


async def authorized(request: Request, scope: str) -> store.Principal:
    """The principal of a handler that checks its key itself (the approver page): the key's owed
    check is settled now, then `scope` is required."""
    principal = await authenticated(request)
    await settle()
    check(principal, [scope])
    return principal


def defer_to_endpoint() -> None:
    """This request's owed check runs with its endpoint (routing.Route), not in a hop of its own."""
    DEFERRABLE.set(True)


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
