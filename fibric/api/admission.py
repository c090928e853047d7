"""Who is calling and whether their budget allows it, decided once per request before routing.

The bearer key is resolved here, so the rate limit can count per tenant; the
principal (or why there is none) is left in the request's state for
`auth.authenticated`, which turns a missing or bad key into 401 only on
routes that need a key. Then one hit is counted against the caller's budget
for the route class: over it, the request ends here with 429 `rate_limited`
and `Retry-After`; otherwise every response, errors included, carries the
RateLimit-Limit/Remaining/Reset headers.

Keys are checked by auth.py (`auth.Keys`): with in-process counters, a key
this app has seen valid is recalled from memory and admitted on the event
loop, its store check that it is still valid (not revoked) left owed to the
request, which runs it in the endpoint's own thread (auth.py says why that is
as safe as a check of its own). Otherwise the key is looked up on the app's
quick threads (workers.py), in one hop with the counter (which may be in
Redis).
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fibric import errors, ids, store
from fibric.api import auth, error_responses, ratelimit, workers

_NOUN = {ratelimit.READS: "reads", ratelimit.WRITES: "writes", ratelimit.EVENTS: "events"}


class Admission:
    def __init__(self, app: ASGIApp, state: store.StateStore, limiter: ratelimit.RateLimiter) -> None:
        self.app = app
        self.state = state
        self.limiter = limiter
        self.keys = auth.Keys(state)

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
        owed: auth.Verification | None = None
        recalled = self.keys.recall(header) if self.limiter.local else None
        if recalled is not None:
            principal, owed = recalled
            failure = None
            budget = self.limiter.hit(principal.tenant_id, principal.tenant_id, klass)
        elif not header and self.limiter.local:
            principal, failure, budget = self._admit(header, klass, address)
        else:
            principal, failure, budget = await workers.run(self._admit, header, klass, address)
        auth.admit(request_state, principal, failure, owed)
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

    def _admit(
        self, header: str | None, klass: str, address: str
    ) -> tuple[store.Principal | None, errors.FibricError | None, ratelimit.Budget | None]:
        principal: store.Principal | None = None
        failure: errors.FibricError | None = None
        if header:
            try:
                principal = self.keys.authenticate(header)
            except errors.FibricError as e:  # 401, or the store briefly down: the route reports it
                failure = e
        if principal is not None:
            budget = self.limiter.hit(principal.tenant_id, principal.tenant_id, klass)
        else:
            budget = self.limiter.hit(f"anonymous:{address}", None, klass)
        return principal, failure, budget

