"""Cross-site request forgery: every POST of the approver page must prove it came from the page.

Three walls, each enough on its own against a page on another site:

1. The key's cookie is SameSite=Strict (keycookie.py): a browser does not
   send it with a request another site starts, so a forged POST arrives
   signed out.
2. Where the request came from (`same_origin`): `Sec-Fetch-Site`, which
   browsers set and no page can, must say `same-origin` when present, and
   `Origin` (or, without one, `Referer`) must be this server's own origin.
   The page's Referrer-Policy is `no-referrer`, and under it a browser sends
   `Origin: null` with a form POST (the Fetch standard, "append a request
   Origin header"); so `null` passes only when Sec-Fetch-Site says
   same-origin.
3. A token in every form (`token`): HMAC-SHA256 keyed by the session's own
   secret, the API key in the HttpOnly cookie, which no other site can read;
   so no other site can compute it either. It is the same for every form of a
   session (no server-side state, any replica checks it), and it reveals
   nothing of the key.

Signing in has no session yet, so it relies on the second wall alone: a
forged sign-in (signing a victim in with the attacker's key) is refused there.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlsplit

from starlette.requests import Request

FIELD = "csrf_token"  # the form field that carries the token
_PURPOSE = b"fibric-ui-csrf/v1"
_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int | None]


def token(key: str) -> str:
    """The token the session of `key` posts with every form."""
    digest = hmac.new(key.encode("ascii"), _PURPOSE, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def valid(key: str | None, presented: str | None) -> bool:
    """Whether `presented` is the token of the session of `key` (compared in constant time)."""
    if not key or not presented:
        return False
    return hmac.compare_digest(token(key).encode("ascii"), presented.encode("utf-8", "replace"))


def same_origin(request: Request) -> str | None:
    """None when the request came from this server's own pages, else why it did not."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site != "same-origin":
        return f"the browser says it was sent from a {site} page"
    own = _origin(str(request.base_url))
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        return None if _matches(origin, own) else "its Origin header names another site"
    if site == "same-origin":
        return None
    referer = request.headers.get("referer")
    if referer:
        return None if _matches(referer, own) else "its Referer header names another site"
    return "it carries no header that says which page sent it"


def _matches(url: str, own: Origin | None) -> bool:
    found = _origin(url)
    return found is not None and found == own


def _origin(url: str) -> Origin | None:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not scheme or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS.get(scheme)
