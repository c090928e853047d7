"""The FastAPI application: routes, error handling, request ids, and the controller's lifespan.

`create_app` is the only constructor and takes everything explicitly; the
app keeps what it was given on `app.state` (see context.py), so tests build as
many independent apps as they like. The controller runs inside the app's
lifespan, on the same event loop as uvicorn (DESIGN.md, Runtime).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

import fibric
from fibric import settings as settings_module
from fibric import store
from fibric.api import context, errors, middleware, routes


def create_app(
    settings: settings_module.Settings,
    state: store.StateStore,
    controller: Any | None = None,
) -> FastAPI:
    """The v1 API over `state`; `controller` (see context.Controller) is started and stopped with it."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if controller is not None:
            await controller.start()
        try:
            yield
        finally:
            if controller is not None:
                await controller.stop()

    app = FastAPI(
        title="Fibric API",
        version=fibric.__version__,
        summary="Desired state, events, plans and receipts of governed AI operators.",
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.fibric = context.Context(settings=settings, state=state, controller=controller)
    errors.install(app)
    app.add_middleware(middleware.RequestContext, max_body_bytes=settings.server.max_body_bytes)
    for router in routes.ROUTERS:
        app.include_router(router)
    app.add_api_route("/healthz", healthz, methods=["GET"], include_in_schema=False)
    return app


async def healthz() -> dict[str, str]:
    """Liveness for load balancers and scripts: the process answers."""
    return {"status": "ok"}
