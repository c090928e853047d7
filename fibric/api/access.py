"""One sample and one log line per request: the request histogram and the access log.

`Access` runs inside `RequestId` (so it knows the request's id) and outside
`Admission` (so 429s and 401s are counted too); when the response is over it
records the route's template (`/v1/plans/{plan_id}`, never the raw path, so
the labels stay few), the method, the status and the duration, in the
metrics (unless they are off) and as one INFO line on the `fibric.access`
logger with the fields request_id, tenant_id, route, method, status and
duration_ms. The tenant is the one admission found for the key; the key
itself, the headers, the query and the body are never logged.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fibric import metrics as metrics_module
from fibric.api import auth

log = logging.getLogger("fibric.access")
UNMATCHED = "unmatched"  # the route label of a path no route has (404)


class Access:
    def __init__(self, app: ASGIApp, metrics: metrics_module.Metrics | None) -> None:
        """`metrics` None: the access log only."""
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers if the app raises before it starts a response

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or UNMATCHED
        method = scope["method"]
        request_state = scope.get("state", {})
        principal = request_state.get(auth.PRINCIPAL)
        tenant_id = principal.tenant_id if principal is not None else ""
        if self.metrics is not None:
            self.metrics.request(tenant_id, route, method, status, seconds)
        if log.isEnabledFor(logging.INFO):
            ms = round(seconds * 1000, 2)
            log.info("%s %s %d %.1fms", method, route, status, ms, extra={
                "request_id": request_state.get("request_id"), "tenant_id": tenant_id or None,
                "route": route, "method": method, "status": status, "duration_ms": ms})
