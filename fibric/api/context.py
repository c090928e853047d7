"""What a route needs from the app: settings, the state store and the controller.

`create_app` puts one `Context` on `app.state`; routes receive it through the
`Ctx` dependency, so nothing in the API lives in a module-level global and two
apps in one process (tests do this) never share state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request

from fibric import settings as settings_module
from fibric import store


class Controller(Protocol):
    """The controller as the API sees it.

    `notify` is called from worker threads after each committed write, once
    per changed object; it must be thread-safe and must not block (enqueue and
    return). `start` and `stop` run in the app's lifespan.
    """

    def notify(self, tenant_id: str, kind: str, name: str) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class Context:
    settings: settings_module.Settings
    state: store.StateStore
    controller: Any | None  # a Controller; Any so duck-typed test doubles fit


async def get_context(request: Request) -> Context:
    # async: a plain attribute read, no reason to hop to the thread pool
    context: Context = request.app.state.fibric
    return context


Ctx = Annotated[Context, Depends(get_context)]
