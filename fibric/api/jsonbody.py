"""Request bodies are parsed as strict JSON: no NaN or Infinity, no lone surrogates.

Python's json module accepts `NaN`, `Infinity` and escapes of half a UTF-16
surrogate pair (`"\\ud800"`). None of them is JSON a client meant to send (RFC
8259 has no NaN; a lone surrogate is not a character), and each would fail
later, when a store writes the value or a response is encoded: a 500 on bad
input. Refusing them while parsing makes them what they are, malformed JSON:
a 400 through FastAPI's own json_invalid path (see error_responses.on_validation_error).

Every route parses its body with `StrictJSONRequest` (see routing.Route).
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import Request

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse(await self.body())
        return self._json


def parse(body: bytes) -> Any:
    """`json.loads`, refusing what is not interoperable JSON with a JSONDecodeError."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise json.JSONDecodeError("the body is not UTF-8", "", e.start) from None

    def refuse(constant: str) -> Any:
        raise json.JSONDecodeError(f"{constant} is not a JSON value", text, max(text.find(constant), 0))

    try:
        value = json.loads(text, parse_constant=refuse)
    except RecursionError:
        raise json.JSONDecodeError("the JSON is nested too deeply", text, 0) from None
    # Only bodies that spell a surrogate escape can hold a lone one; walk just those.
    if _SURROGATE_ESCAPE.search(body) and _has_lone_surrogate(value):
        raise json.JSONDecodeError("a \\u escape names half a surrogate pair, not a character", text, 0)
    return value


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False
