"""Every error leaves the API in the reference's one shape, with the reference's codes.

`{"error": {"code", "message", "request_id", "docs"}}`, plus an additive
`fields` list ([{field, message}]) when the request named fields that are
wrong. This is the edge where Fibric's error tree (fibric/errors.py) and
FastAPI's own errors (unknown route, bad method, request validation) become
HTTP; nothing else in the API builds an error body.

Decisions the reference leaves open:

- `TemporaryError` (a store or dependency briefly down) is a 500
  `internal_error` with `Retry-After`: the reference defines no 503 code, and
  "safe to retry with backoff" is exactly what its 500 promises.
- A body over `settings.server.max_body_bytes` is a 413 with code
  `invalid_request` (see middleware.py): the right HTTP status for proxies and
  clients, with a code from the reference's list.
- 405 (known route, other method) uses `invalid_request`, with `Allow`.
- Approving a plan that is not `proposed` is 409 `plan_not_approvable`, the
  code of the reference's own error example (its table lists only
  `conflict`); every other 409 is `conflict`.
- 429 `rate_limited` is answered by admission.py, with `Retry-After`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from fibric import errors, ids, specs
from fibric.api import auth
from fibric.store import plan_store

log = logging.getLogger("fibric.api")

DOCS_URL = "https://api.fibric.io/docs/errors#"
REQUEST_ID_HEADER = "Request-Id"
# Fields the server derives from the API key; a body may never carry them.
TENANCY_FIELDS = ("tenant_id", "reseller_id")

_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "insufficient_scope",
    404: "not_found",
    409: "conflict",
    422: "policy_blocked",
    429: "rate_limited",
}


class FieldProblem(BaseModel):
    field: str = Field(description="Dotted path of the field in the request, e.g. documents[2].spec.policy.")
    message: str


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable: invalid_request, unauthenticated, "
                      "insufficient_scope, not_found, conflict, plan_not_approvable, policy_blocked, "
                      "rate_limited, internal_error.")
    message: str = Field(description="Human-readable; names the field for invalid_request.")
    request_id: str = Field(description="The request's id, also in the Request-Id header.")
    docs: str
    fields: list[FieldProblem] | None = Field(
        default=None, description="Each field that is wrong (additive; present on some 400s)."
    )


class Error(BaseModel):
    """The reference's error body, on every error response."""

    error: ErrorDetail


_DESCRIPTIONS = {
    400: "invalid_request: malformed JSON, or a field, query parameter, cursor or header failed "
         "validation (the message names it)",
    401: "unauthenticated: missing, malformed, unknown or revoked API key",
    403: "insufficient_scope: the key lacks the scope this route requires",
    404: "not_found: no such resource for this tenant (another tenant's ids read the same)",
    409: "conflict: a state precondition failed, or a request with the same Idempotency-Key is "
         "still running",
    413: "invalid_request: the body is larger than the server's limit",
    422: "policy_blocked: the action was vetted and refused by a fail-closed policy",
    429: "rate_limited: over this tenant's budget for the route class; honour Retry-After",
    500: "internal_error: something failed on our side; safe to retry idempotent calls",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for these error statuses, each with the Error body."""
    return {status: {"model": Error, "description": _DESCRIPTIONS[status]} for status in statuses}


# Every route may answer these: a bad query, no key, a key without the scope,
# over the rate limit, or a failure on our side.
RESPONSES = responses(400, 401, 403, 429, 500)


def request_id(request: Request) -> str:
    """The id middleware.RequestContext gave this request (a fresh one if it never ran)."""
    value = getattr(request.state, "request_id", None)
    if not isinstance(value, str):
        value = ids.new_id("request")
        request.state.request_id = value
    return value


def error_response(
    request_id: str,
    status: int,
    code: str,
    message: str,
    *,
    fields: Sequence[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The reference's error body, with the request id in the body and the Request-Id header."""
    detail: dict[str, Any] = {
        "code": code,
        "message": message,
        "request_id": request_id,
        "docs": DOCS_URL + code,
    }
    if fields:
        detail["fields"] = list(fields)
    return JSONResponse(
        {"error": detail},
        status_code=status,
        headers={**(headers or {}), REQUEST_ID_HEADER: request_id},
    )


def field_of(problem: errors.SpecProblem) -> str:
    """The dotted body path of a problem: `documents[2]` (its source) + `spec.policy` (its path)."""
    if problem.file and problem.path:
        return f"{problem.file}.{problem.path}"
    return problem.file or problem.path


def field_entries(problems: Sequence[errors.SpecProblem]) -> list[dict[str, str]]:
    return [{"field": field_of(p), "message": _tenancy_message(field_of(p), p.message)} for p in problems]


def invalid(request: Request, entries: Sequence[dict[str, str]], fallback: str) -> JSONResponse:
    """400 invalid_request whose message names the first field (and counts the rest)."""
    if entries:
        first = entries[0]
        message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        if len(entries) > 1:
            message += f" (and {len(entries) - 1} more problem{'s' if len(entries) > 2 else ''})"
    else:
        message = fallback
    named = [e for e in entries if e["field"]]
    return error_response(request_id(request), 400, "invalid_request", message, fields=named or None)


async def settled(request: Request) -> JSONResponse | None:
    """Run the key check the request still owes (auth.py); its error response if the key fails it.

    Every error answered before the endpoint ran goes through here first, so a
    revoked key reads 401 rather than whatever else was wrong with the request.
    """
    try:
        await auth.settle()
    except errors.FibricError as e:
        return await on_fibric_error(request, e)
    return None


async def on_fibric_error(request: Request, exc: Exception) -> JSONResponse:
    rid = request_id(request)
    if not isinstance(exc, errors.Unauthenticated) and (owed := await settled(request)):
        return owed
    if isinstance(exc, errors.SpecInvalid):
        return invalid(request, field_entries(exc.problems), str(exc))
    if isinstance(exc, errors.NotFound):
        return error_response(rid, 404, "not_found", str(exc))
    if isinstance(exc, plan_store.NotApprovable):
        # The reference's own example body uses this code for a plan that is not proposed;
        # it is a 409 like `conflict` (docs/api.md).
        return error_response(rid, 409, "plan_not_approvable", str(exc))
    if isinstance(exc, errors.Conflict):
        return error_response(rid, 409, "conflict", str(exc))
    if isinstance(exc, errors.Unauthenticated):
        return error_response(rid, 401, "unauthenticated", str(exc),
                              headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, errors.InsufficientScope):
        return error_response(rid, 403, "insufficient_scope", str(exc))
    if isinstance(exc, errors.PolicyBlocked):
        return error_response(rid, 422, "policy_blocked", str(exc))
    if isinstance(exc, errors.TemporaryError):
        retry_after = max(1, math.ceil(exc.delay))
        log.warning("request %s: temporary failure: %s", rid, exc)
        return error_response(
            rid, 500, "internal_error",
            f"A dependency is temporarily unavailable; retry after {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )
    log.error("request %s failed: %s", rid, exc, exc_info=exc)
    return internal_error(rid)


async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's request validation (query, path, body) as 400 invalid_request naming the field."""
    if not isinstance(exc, RequestValidationError):  # registered for this class only
        return await on_unhandled(request, exc)
    if owed := await settled(request):
        return owed
    items = list(exc.errors())
    body_items = [e for e in items if e.get("loc", ("",))[0] == "body"]
    malformed = next((e for e in body_items if e.get("type") == "json_invalid"), None)
    if malformed is not None:
        reason = (malformed.get("ctx") or {}).get("error", "invalid JSON")
        position = malformed["loc"][1] if len(malformed["loc"]) > 1 else None
        where = f" at position {position}" if isinstance(position, int) else ""
        return invalid(request, [], f"Malformed JSON body: {reason}{where}.")
    if body_items and not _is_json(request) and not _only_missing_body(body_items):
        return invalid(request, [], "Send the body as JSON with 'Content-Type: application/json'.")
    entries = [_entry(e) for e in items]
    return invalid(request, entries, "The request is invalid.")


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors: unknown route (404), wrong method (405), unreadable body (400)."""
    if not isinstance(exc, StarletteHTTPException):  # registered for this class only
        return await on_unhandled(request, exc)
    if owed := await settled(request):
        return owed
    rid = request_id(request)
    headers = dict(exc.headers or {})
    status = exc.status_code
    if status == 404:
        message = f"No such route: {request.method} {request.url.path}"
    elif status == 405:
        allowed = headers.get("Allow") or headers.get("allow") or ""
        message = f"Method {request.method} is not allowed on {request.url.path}" + (
            f"; allowed: {allowed}" if allowed else ""
        )
    else:
        message = str(exc.detail)
    if status >= 500:
        return internal_error(rid)
    return error_response(rid, status, _HTTP_CODES.get(status, "invalid_request"), message,
                          headers=headers)


async def on_unhandled(request: Request, exc: Exception) -> JSONResponse:
    """Anything unplanned: log the traceback here, never send it."""
    rid = request_id(request)
    log.error("request %s failed", rid, exc_info=exc)
    return internal_error(rid)


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.FibricError, on_fibric_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unhandled)


def internal_error(rid: str) -> JSONResponse:
    """500 internal_error, never with details: those go to the log."""
    return error_response(
        rid, 500, "internal_error",
        f"Something failed on our side; quote {rid} when reporting it. Safe to retry idempotent calls.",
    )


def _entry(item: Any) -> dict[str, str]:
    loc = list(item.get("loc", ()))
    where, rest = (loc[0], loc[1:]) if loc else ("body", [])
    path = [p for p in rest if not _is_union_tag(p)]
    field = specs.format_path(path) if path else ("" if where == "body" else str(where))
    kind = item.get("type")
    if kind == "extra_forbidden":
        message = "unknown field"
    elif kind == "missing":
        message = "field required" if path else "request body is required"
    else:
        message = str(item.get("msg", "invalid value")).removeprefix("Value error, ")
    return {"field": field, "message": _tenancy_message(field, message)}


def _tenancy_message(field: str, message: str) -> str:
    last = field.rsplit(".", 1)[-1]
    if last in TENANCY_FIELDS and message == "unknown field":
        return "cannot be set: the tenant comes from the API key"
    return message


def _is_union_tag(part: Any) -> bool:
    return isinstance(part, str) and "[" in part


def _is_json(request: Request) -> bool:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _only_missing_body(items: list[Any]) -> bool:
    return all(e.get("type") == "missing" and len(e.get("loc", ())) == 1 for e in items)
