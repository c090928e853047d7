"""The approver page's session: the API key, kept in one cookie and presented to the API's own auth.

Signing in stores the key in the cookie `fibric_key`: HttpOnly (no script
reads it), SameSite=Strict (no other site's page makes the browser send it),
Path=/ui (the JSON API under /v1 never receives it), Secure when the page is
served over https, and no Max-Age (it ends with the browser session). The key
never appears in a URL, and nothing here logs it.

`KeyCookie` runs outside admission (app.py adds it last, so it is outermost).
For a request under /ui it makes the cookie's key the request's bearer key,
and drops any Authorization header the request came with, so the page is
signed in by its cookie alone. Admission and auth.py then treat the page
exactly as they treat the API: the same lookup, the same revocation check,
the same scopes, the tenant's rate limit.
"""

from __future__ import annotations

from starlette.requests import Request, cookie_parser
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

NAME = "fibric_key"
PATH = "/ui"
_MAX_KEY = 200  # far longer than any key the store issues (sk_live_ + hex)


def is_page(path: str) -> bool:
    """Whether a request path belongs to the approver page."""
    return path == PATH or path.startswith(PATH + "/")


def key_of(request: Request) -> str | None:
    """The key the request's cookie carries, if it is one that could be a key at all."""
    return plausible(request.cookies.get(NAME))


def keep(response: Response, request: Request, key: str) -> None:
    """Set the cookie that keeps `key` for the page (see the module docstring for its flags)."""
    response.set_cookie(NAME, key, path=PATH, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def forget(response: Response, request: Request) -> None:
    """Clear the cookie (sign out): same name, path and flags, expired."""
    response.delete_cookie(NAME, path=PATH, httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")


class KeyCookie:
    """Under /ui, the request's bearer key is its cookie's key, or none."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_page(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"authorization", b"cookie")]
        cookies = [v for k, v in scope["headers"] if k == b"cookie"]
        key = plausible(cookie_parser(b"; ".join(cookies).decode("latin-1")).get(NAME)) if cookies else None
        if cookies:
            headers.append((b"cookie", b"; ".join(cookies)))
        if key is not None:
            headers.append((b"authorization", b"Bearer " + key.encode("ascii")))
        await self.app({**scope, "headers": headers}, receive, send)


def plausible(value: str | None) -> str | None:
    """`value` if it could be a key: printable ASCII, no spaces, bounded (so it may go in a header).

    Whether it is a valid key is for the store to say.
    """
    if not value or len(value) > _MAX_KEY or not value.isascii() or not value.isprintable() or " " in value:
        return None
    return value

