"""The route class every router uses: strict JSON bodies, and the key's owed check run first.

Three things must happen around every endpoint, whatever the route:

- Its body is parsed as strict JSON (jsonbody.py).
- If the caller's key was recognised from memory (see auth.py), the store
  check that the key is still valid runs before the endpoint, in the same
  worker thread as a sync endpoint (one hop to a worker thread per request,
  not two), or in a worker thread before an async one.
- A sync endpoint runs in a worker thread through workers.run, on the
  app's quick threads (`app.state.quick_threads`), not FastAPI's own thread
  pool, or through workers.run_slow if it is marked `@slow` (workers.py
  says why).

Doing them here, in the route class, rather than in each route, means a new
route cannot forget one.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.routing import APIRoute

from fibric.api import auth, jsonbody, workers

F = TypeVar("F", bound=Callable[..., Any])
_SLOW = "fibric_slow"


class Route(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, checked_first(endpoint), **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            auth.defer_to_endpoint()
            workers.for_request(request.scope)
            return await handler(jsonbody.StrictJSONRequest(request.scope, request.receive))

        return route_handler


def slow(endpoint: F) -> F:
    """Mark a sync endpoint that may take seconds (an SQL query, a snapshot), to run on the slow pool.

    Put it under the route decorator:

        @router.post("/query", ...)
        @routing.slow
        def query_receipts(...): ...
    """
    if inspect.iscoroutinefunction(endpoint):
        raise TypeError(f"routing.slow marks sync endpoints; {endpoint.__name__} is async")
    setattr(endpoint, _SLOW, True)
    return endpoint


def is_slow(endpoint: Callable[..., Any]) -> bool:
    return bool(getattr(endpoint, _SLOW, False))


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

    run = workers.run_slow if is_slow(endpoint) else workers.run

    @functools.wraps(endpoint)
    async def run_in_worker(*args: Any, **kwargs: Any) -> Any:
        return await run(checked, *args, **kwargs)

    return run_in_worker
