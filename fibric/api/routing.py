"""The route class every router uses: strict JSON bodies, and the key's owed check run first.

Three things must happen around every endpoint, whatever the route:

- Its body is parsed as strict JSON (jsonbody.py).
- If the caller's key was recognised from memory (see auth.py), the store
  check that the key is still valid runs before the endpoint, in the same
  worker thread as a sync endpoint (one hop to a worker thread per request,
  not two), or in a worker thread before an async one.
- A sync endpoint runs in a worker thread through workers.run, not
  FastAPI's own thread pool (workers.py says why).

Doing them here, in the route class, rather than in each route, means a new
route cannot forget one.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from fibric.api import auth, jsonbody, workers


class Route(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, checked_first(endpoint), **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            auth.DEFERRABLE.set(True)
            return await handler(jsonbody.StrictJSONRequest(request.scope, request.receive))

        return route_handler


def checked_first(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """`endpoint` as a coroutine function (same signature) that runs the request's owed key check first.

    A sync endpoint runs, check included, in one worker thread.
    """
    if inspect.iscoroutinefunction(endpoint):

        @functools.wraps(endpoint)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            await auth.settle()
            return await endpoint(*args, **kwargs)

        return run_async

    def checked(*args: Any, **kwargs: Any) -> Any:
        auth.run_pending()  # in the endpoint's worker thread
        return endpoint(*args, **kwargs)

    @functools.wraps(endpoint)
    async def run_in_worker(*args: Any, **kwargs: Any) -> Any:
        return await workers.run(checked, *args, **kwargs)

    return run_in_worker
