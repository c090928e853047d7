"""Per-request context: a request id on every response, and a cap on the body size.

The id (`req_...`) is generated first (`RequestId` is the outermost of our
middleware), before anything can fail, so every response, errors included,
carries the same id in its `Request-Id` header and in its error body; it is
what a caller quotes and what our logs print.

The body cap (`BodyLimit`) runs before anything reads the body: a declared
Content-Length over the limit is refused without reading a byte; a chunked
body is read up to the limit and then refused. Refusal is 413 with code
`invalid_request`.
"""

from __future__ import annotations

from opentelemetry import propagate, trace
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fibric import ids, tracing
from fibric.api import auth, error_responses


class RequestId:
    """The request's id, and its span: a child of the caller's `traceparent`, when it sent one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ids.new_id("request")
        scope.setdefault("state", {})["request_id"] = request_id
        token = tracing.REQUEST_ID.set(request_id)
        caller = propagate.extract(Headers(scope=scope))
        method = scope.get("method", "GET")
        with tracing.tracer.start_as_current_span(method, context=caller, kind=trace.SpanKind.SERVER) as span:
            span.set_attribute("http.request.method", method)
            span.set_attribute("fibric.request_id", request_id)

            async def send_with_id(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = MutableHeaders(scope=message)
                    if error_responses.REQUEST_ID_HEADER not in headers:
                        headers.append(error_responses.REQUEST_ID_HEADER, request_id)
                    span.set_attribute("http.response.status_code", message["status"])
                await send(message)

            try:
                await self.app(scope, receive, send_with_id)
            finally:
                route = getattr(scope.get("route"), "path", None)  # the template, e.g. /v1/plans/{plan_id}
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                principal = scope["state"].get(auth.PRINCIPAL)
                if principal is not None:
                    span.set_attribute("fibric.tenant_id", principal.tenant_id)
                tracing.REQUEST_ID.reset(token)


class BodyLimit:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await self._refuse(scope, receive, send, 400,
                                   "Content-Length must be a whole number of bytes.")
                return
            if int(declared) > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return

        # No declared length (chunked or none): read up to the limit, then replay.
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._refuse(
            scope, receive, send, 413,
            f"The request body is larger than the limit of {self.max_body_bytes} bytes.",
        )

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
        request_id = scope.get("state", {}).get("request_id") or ids.new_id("request")
        response = error_responses.error_response(request_id, status, "invalid_request", message)
        await response(scope, receive, send)


async def read_body(receive: Receive) -> tuple[bytes, Receive]:
    """The whole request body, and a `receive` that replays it to the app."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return b"".join(chunks), replay
