"""The `Idempotency-Key` header on POSTs: a retry replays the first response instead of acting twice.

Stripe's semantics (the records themselves live in store/idempotency_store.py):

- The first request with a key runs; its response is stored when it did
  something (2xx) or was vetted and refused (422), and is replayed, status and
  body, with `Idempotent-Replayed: true`, to every request with the same key
  for 24 hours. The replay keeps the first response's `Request-Id`: it is that
  request's answer, and that request is the one in the logs and receipts.
- Responses that changed nothing are not stored, so a retry runs afresh: a
  request that failed validation (400, 413), was not found (404), conflicted
  (409) or failed on our side (5xx). A rate-limited request never gets here.
- The same key with different parameters (method, path, query or JSON body)
  is 400 `invalid_request`; a key whose first request is still running is 409
  `conflict`. Keys are per tenant: two tenants never see each other's answers.

The stored response is written before the client receives it, so a client
that retries the moment it has an answer finds the answer, not "still running".
The records are read and written on the app's quick threads (workers.py), as
the routes' own store work is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re

import anyio
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fibric import errors, ids, store
from fibric.api import auth, error_responses, middleware, workers
from fibric.store import idempotency_store, secretbox

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# A 409 for a key whose first request is still running carries Retry-After, so a client can tell
# "wait and repeat" from a conflict that repeating will not fix (fibric.client retries only the former).
IN_FLIGHT_RETRY_AFTER = "1"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def keeps(status: int) -> bool:
    """Whether a response is the key's answer for good (see the module docstring)."""
    return status < 400 or status == 422


_SECRET_FIELD = re.compile(rb'"signing_secret":\s*"')
_SEALED = b"sealed:"


class Idempotency:
    def __init__(self, app: ASGIApp, state: store.StateStore, box: secretbox.SecretBox | None = None) -> None:
        """`box` seals a stored response that shows a signing secret (a webhook's create or
        rotate): the replay must show it again, but it is never stored in plaintext."""
        self.app = app
        self.state = state
        self.box = box

    def _sealed(self, body: bytes, tenant_id: str) -> bytes:
        if self.box is None or not _SECRET_FIELD.search(body):
            return body
        return _SEALED + self.box.seal(body.decode("utf-8"), tenant_id).encode("ascii")

    def _opened(self, replay: idempotency_store.Replay, tenant_id: str) -> idempotency_store.Replay:
        if self.box is None or not replay.body.startswith(_SEALED):
            return replay
        opened = self.box.open(replay.body[len(_SEALED):].decode("ascii"), tenant_id).encode("utf-8")
        return dataclasses.replace(replay, body=opened)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        key = Headers(scope=scope).get(HEADER)
        principal: store.Principal | None = scope.get("state", {}).get(auth.PRINCIPAL)
        if key is None or principal is None:  # without a key the route answers 401 itself
            await self.app(scope, receive, send)
            return
        workers.for_request(scope)
        request_id = str(scope["state"].get("request_id") or ids.new_id("request"))
        problem = check_key(key)
        body, replay = await middleware.read_body(receive)
        tenant_id = principal.tenant_id
        request_state = scope["state"]
        # A key admitted from memory is checked against the store before anything
        # is claimed or replayed: a revoked key must never read a stored answer.
        owed_key_check = auth.take_owed(request_state)

        def claim() -> idempotency_store.Outcome | None:
            owed_key_check()
            if problem:
                return None
            return idempotency_store.begin(self.state, tenant_id, key, fingerprint(scope, body))

        try:
            outcome = await workers.run(claim)
        except errors.FibricError as e:  # the key failed its check: the route answers 401
            auth.refuse(request_state, e)
            await self.app(scope, replay, send)
            return
        if outcome is None:
            await _error(scope, receive, send, request_id, 400, "invalid_request", str(problem), field=HEADER)
            return
        if isinstance(outcome, idempotency_store.Replay):
            await _replay(send, await workers.run(self._opened, outcome, tenant_id))
            return
        if isinstance(outcome, idempotency_store.InFlight):
            await _error(scope, receive, send, request_id, 409, "conflict",
                         f"A request with {HEADER} '{key}' is still being processed; "
                         "retry once it has finished.", headers={"Retry-After": IN_FLIGHT_RETRY_AFTER})
            return
        if isinstance(outcome, idempotency_store.Mismatch):
            await _error(scope, receive, send, request_id, 400, "invalid_request",
                         f"{HEADER} '{key}' was already used with different parameters; "
                         "use a new key for a different request.", field=HEADER)
            return
        await self._run(scope, replay, send, tenant_id, key, outcome.attempt, request_id)

    async def _run(
        self, scope: Scope, receive: Receive, send: Send, tenant_id: str, key: str, attempt: str,
        request_id: str,
    ) -> None:
        start: Message | None = None
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await self.app(scope, receive, capture)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await workers.run(idempotency_store.release, self.state, tenant_id, key, attempt)
            raise
        if start is None:  # the app answered nothing; nothing to keep or send
            with anyio.CancelScope(shield=True):
                await workers.run(idempotency_store.release, self.state, tenant_id, key, attempt)
            return
        body = b"".join(chunks)
        status = int(start["status"])
        with anyio.CancelScope(shield=True):
            if keeps(status):
                headers = [("content-type", Headers(raw=start["headers"]).get("content-type") or
                            "application/json"), (error_responses.REQUEST_ID_HEADER, request_id)]
                await workers.run(lambda: idempotency_store.finish(
                    self.state, tenant_id, key, attempt, status=status, headers=headers,
                    body=self._sealed(body, tenant_id)))
            else:
                await workers.run(idempotency_store.release, self.state, tenant_id, key, attempt)
        await send(start)
        await send({"type": "http.response.body", "body": body})


def check_key(key: str) -> str | None:
    """Why a header value cannot be an idempotency key, or None."""
    if not key:
        return f"{HEADER} must not be empty."
    if len(key) > idempotency_store.MAX_KEY_LENGTH:
        return f"{HEADER} must be at most {idempotency_store.MAX_KEY_LENGTH} characters, not {len(key)}."
    if _CONTROL.search(key):
        return f"{HEADER} must not contain control characters."
    return None


def fingerprint(scope: Scope, body: bytes) -> str:
    """What makes two requests the same: method, path, query and body (JSON compared as data)."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, RecursionError):  # not JSON (the request will fail validation): the bytes
        canonical = body
    digest = hashlib.sha256()
    for part in (scope["method"].encode(), scope["path"].encode(), scope.get("query_string", b""),
                 canonical):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


async def _replay(send: Send, replay: idempotency_store.Replay) -> None:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in replay.headers]
    headers += [(b"content-length", str(len(replay.body)).encode()),
                (REPLAYED_HEADER.lower().encode(), b"true")]
    await send({"type": "http.response.start", "status": replay.status, "headers": headers})
    await send({"type": "http.response.body", "body": replay.body})


async def _error(
    scope: Scope, receive: Receive, send: Send, request_id: str, status: int, code: str, message: str,
    *, field: str | None = None, headers: dict[str, str] | None = None,
) -> None:
    fields = [{"field": field, "message": message}] if field else None
    response = error_responses.error_response(request_id, status, code, message, fields=fields,
                                              headers=headers)
    await response(scope, receive, send)
