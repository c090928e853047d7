"""The approver page's HTML: Jinja2 templates shipped in the package, and the headers every page carries.

Templates and the stylesheet are package data (pyproject.toml), read through
the package, so a wheel install serves them as an editable one does. Every
value is autoescaped. Every response carries `HEADERS`: a Content-Security-
Policy that allows no script at all and only this server's stylesheet, no
framing (`frame-ancestors 'none'` and X-Frame-Options DENY), no Referer,
no MIME sniffing, and `Cache-Control: no-store`, since pages show plans.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import jinja2
from starlette.responses import HTMLResponse, Response

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
                               " frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STYLESHEET = "approvers.css"


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


@functools.cache
def environment() -> jinja2.Environment:
    """The templates' environment, made once (it only caches compiled templates)."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("fibric.api.ui", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["pretty_json"] = _pretty_json
    return env


def page(template: str, *, status_code: int = 200, headers: dict[str, str] | None = None,
         **values: Any) -> HTMLResponse:
    """`template` rendered with `values`, with the page headers."""
    html = environment().get_template(template).render(**values)
    return HTMLResponse(html, status_code=status_code, headers={**HEADERS, **(headers or {})})


@functools.cache
def _stylesheet_bytes() -> bytes:
    return (resources.files("fibric.api.ui") / "static" / STYLESHEET).read_bytes()


def stylesheet() -> Response:
    """The page's one stylesheet (no plan data in it: browsers may keep it a while)."""
    return Response(_stylesheet_bytes(), media_type="text/css; charset=utf-8",
                    headers={**HEADERS, "Cache-Control": "public, max-age=3600"})
