"""The OpenAPI 3.1 document at /v1/openapi.json, told the way the API actually answers.

FastAPI documents a 422 `HTTPValidationError` on every route with inputs;
Fibric answers invalid input with 400 and the reference's error body, so
those entries are removed. What middleware handles for every route is
declared here once, rather than by a per-route dependency that would cost
every request a step: the bearer key (security scheme), the
`Idempotency-Key` header on POSTs, and on every response the `Request-Id`
header and the RateLimit headers (present unless the rate-limit counters are
unreachable).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from fibric.store import idempotency_store

_HEADERS: dict[str, dict[str, Any]] = {
    "Request-Id": {"description": "The request's id (req_...); equals error.request_id.",
                   "required": True, "schema": {"type": "string", "pattern": "^req_"}},
    "RateLimit-Limit": {"description": "Requests allowed in the current window for this route class.",
                        "schema": {"type": "integer"}},
    "RateLimit-Remaining": {"description": "Requests left in the current window.",
                            "schema": {"type": "integer"}},
    "RateLimit-Reset": {"description": "Seconds until the window resets.", "schema": {"type": "integer"}},
}
_BEARER = {"type": "http", "scheme": "bearer", "bearerFormat": "sk_live_...",
           "description": "A secret API key of one tenant: `Authorization: Bearer sk_live_...`."}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "Retrying with the same key replays the first response (24 h, per tenant).",
    "schema": {"type": "string", "minLength": 1, "maxLength": idempotency_store.MAX_KEY_LENGTH},
}
_RETRY_AFTER = {"description": "On a 429, seconds to wait before retrying.", "schema": {"type": "integer"}}
_REPLAYED = {"description": "true when this is the replayed first response to an Idempotency-Key.",
             "schema": {"type": "string", "enum": ["true"]}}


def install(app: FastAPI) -> None:
    """Make `app.openapi()` (and so /v1/openapi.json) return the tidied document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            tidy(generate())
        return app.openapi_schema  # type: ignore[return-value]  # set by generate()

    app.openapi = openapi  # type: ignore[method-assign]


def tidy(document: dict[str, Any]) -> None:
    components = document.setdefault("components", {})
    components.setdefault("headers", {}).update(
        {**_HEADERS, "Retry-After": _RETRY_AFTER, "Idempotent-Replayed": _REPLAYED}
    )
    components.setdefault("securitySchemes", {})["bearer"] = _BEARER
    document["security"] = [{"bearer": []}]
    for schema in ("HTTPValidationError", "ValidationError"):
        components.get("schemas", {}).pop(schema, None)
    for item in document.get("paths", {}).values():
        for method, operation in item.items():
            if method == "post":
                operation.setdefault("parameters", []).append(_IDEMPOTENCY_KEY)
            responses = operation.get("responses", {})
            if "HTTPValidationError" in str(responses.get("422", {})):
                del responses["422"]
            for status, response in responses.items():
                headers = response.setdefault("headers", {})
                names = list(_HEADERS)
                if status == "429":
                    names.append("Retry-After")
                if method == "post":
                    names.append("Idempotent-Replayed")
                for name in names:
                    headers[name] = {"$ref": f"#/components/headers/{name}"}
