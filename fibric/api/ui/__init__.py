"""The approver page, served at /ui/ by the API app (screens.py has the screens).

`install(app)` adds its routes and the middleware that signs its requests in
with their cookie (keycookie.py); app.py calls it after its own middleware,
so the cookie's key is in place before admission reads the request's key.
"""

from __future__ import annotations

from fastapi import FastAPI

from fibric.api.ui import keycookie, screens


def install(app: FastAPI) -> None:
    app.include_router(screens.router)
    app.add_middleware(keycookie.KeyCookie)


__all__ = ["install"]
