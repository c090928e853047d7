"""Who is calling and whether their budget allows it, decided once per request before routing.

The bearer key is resolved here, so the rate limit can count per tenant; the
principal (or why there is none) is left in the request's state for
`auth.authenticated`, which turns a missing or bad key into 401 only on
routes that need a key. Then one hit is counted against the caller's budget
for the route class: over it, the request ends here with 429 `rate_limited`
and `Retry-After`; otherwise every response, errors included, carries the
RateLimit-Limit/Remaining/Reset headers.

A key's tenant and scopes never change, so they are remembered (`KeyMemory`)
after the first successful lookup. With in-process counters, a remembered key
is admitted on the event loop, and the store check that it is still valid
(not revoked) is left owed to the request (auth.VERIFY), which runs it in the
endpoint's own thread. Otherwise the key is looked up on the app's quick
threads (workers.py), in one hop with the counter (which may be in Redis).

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

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fibric import errors, ids, store
from fibric.api import auth, error_responses, ratelimit, workers

_NOUN = {ratelimit.READS: "reads", ratelimit.WRITES: "writes", ratelimit.EVENTS: "events"}


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


class Admission:
    def __init__(self, app: ASGIApp, state: store.StateStore, limiter: ratelimit.RateLimiter) -> None:
        self.app = app
        self.state = state
        self.limiter = limiter
        self.keys = KeyMemory()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        workers.for_request(scope)  # this middleware's, the idempotency middleware's and the route's work
        header = Headers(scope=scope).get("authorization")
        klass = ratelimit.route_class(scope["method"], scope["path"])
        client = scope.get("client")
        address = str(client[0]) if client else "unknown"
        request_state = scope.setdefault("state", {})
        principal: store.Principal | None
        failure: errors.FibricError | None
        budget: ratelimit.Budget | None
        remembered = self._remembered(header) if self.limiter.local else None
        if remembered is not None and header:
            digest, principal = remembered
            failure = None
            budget = self.limiter.hit(principal.tenant_id, principal.tenant_id, klass)
            request_state[auth.VERIFY] = self._verification(header, digest, principal)
        elif not header and self.limiter.local:
            principal, failure, budget = self._admit(header, klass, address)
        else:
            principal, failure, budget = await workers.run(self._admit, header, klass, address)
        request_state[auth.PRINCIPAL] = principal
        request_state[auth.FAILURE] = failure
        request_id = str(request_state.get("request_id") or ids.new_id("request"))
        extra = budget.headers() if budget is not None else []

        if budget is not None and not budget.allowed:
            response = error_responses.error_response(
                request_id, 429, "rate_limited",
                f"Rate limit of {budget.limit} {_NOUN[klass]} per minute exceeded"
                f"{' for this tenant' if principal else ''}; retry after {budget.retry_after} s.",
                headers={**dict(extra), "Retry-After": str(budget.retry_after)},
            )
            await response(scope, receive, send)
            return

        started = False

        async def send_with_budget(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in extra:
                    headers[name] = value
            await send(message)

        try:
            await self.app(scope, receive, send_with_budget)
        except Exception:
            # Starlette's outermost handler will log this and answer 500, but
            # outside us, without the budget headers; answer here so it has them.
            if not started:
                response = error_responses.internal_error(request_id)
                await response(scope, receive, send_with_budget)
            raise

    def _remembered(self, header: str | None) -> tuple[str, store.Principal] | None:
        """The key's digest and remembered principal, if this process has seen the key valid."""
        if not header:
            return None
        try:
            digest = _digest(auth.bearer_secret(header))
        except errors.Unauthenticated:
            return None
        principal = self.keys.get(digest)
        return (digest, principal) if principal is not None else None

    def _verification(self, header: str, digest: str, principal: store.Principal) -> auth.Verification:
        arrived = time.monotonic()

        def verify() -> None:
            if self.keys.valid_since(digest, arrived):
                return
            started = time.monotonic()
            try:
                current = auth.principal_from_header(self.state, header)
            except errors.Unauthenticated:
                # Revoked (or gone): forget it, so its requests stop counting against the tenant.
                self.keys.forget(digest)
                raise
            if current != principal:  # cannot happen: a key's tenant and scopes are fixed
                self.keys.forget(digest)
                raise errors.Unauthenticated("API key is not recognised")
            self.keys.checked(digest, started)

        return verify

    def _admit(
        self, header: str | None, klass: str, address: str
    ) -> tuple[store.Principal | None, errors.FibricError | None, ratelimit.Budget | None]:
        principal: store.Principal | None = None
        failure: errors.FibricError | None = None
        if header:
            try:
                started = time.monotonic()
                principal = auth.principal_from_header(self.state, header)
                self.keys.remember(_digest(auth.bearer_secret(header)), principal, started)
            except errors.FibricError as e:  # 401, or the store briefly down: the route reports it
                failure = e
        if principal is not None:
            budget = self.limiter.hit(principal.tenant_id, principal.tenant_id, klass)
        else:
            budget = self.limiter.hit(f"anonymous:{address}", None, klass)
        return principal, failure, budget


def _digest(secret: str) -> str:
    # The memory holds no secrets, only their hashes (as the store does).
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
